"""The outcome of one delivery attempt: a value, never an exception."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AttemptResult"]


@dataclass(frozen=True)
class AttemptResult:
    """What happened when a notification was sent once.

    Attributes:
        success: Delivered (a success status, a bot that succeeded, a stored message).
        status: HTTP status, if a response came.
        error: Why it failed, in words (None on success).
        seconds: How long the attempt took.
        retryable: False when retrying cannot help (a refused endpoint); the notification goes
            straight to the dead letters.
        excerpt: The start of the endpoint's response, if it sent one.
    """

    success: bool
    status: int | None = None
    error: str | None = None
    seconds: float = 0.0
    retryable: bool = True
    excerpt: str | None = None
