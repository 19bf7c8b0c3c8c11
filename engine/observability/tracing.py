"""W3C trace context: read or start a ``traceparent`` for each request."""

from __future__ import annotations

import re
import secrets

__all__ = ["TRACEPARENT", "child_traceparent", "new_traceparent", "trace_id_of"]

TRACEPARENT = "traceparent"
"""Header name of W3C Trace Context."""

_VALID = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_traceparent() -> str:
    """A fresh, sampled traceparent."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def child_traceparent(parent: str | None) -> str:
    """A traceparent continuing ``parent``'s trace with a new span id (a new trace if invalid)."""
    match = _VALID.match(parent or "")
    if match is None or match.group(1) == "0" * 32:
        return new_traceparent()
    return f"00-{match.group(1)}-{secrets.token_hex(8)}-{match.group(3)}"


def trace_id_of(traceparent: str) -> str:
    """The 32-hex trace id of a valid traceparent."""
    return traceparent.split("-")[1]


def trace_id_in(traceparent: str | None) -> str | None:
    """The trace id of a traceparent that records carry, or None when there is none or it is
    malformed (records are drawn as traces only when they name one)."""
    match = _VALID.match(traceparent or "")
    return match.group(1) if match is not None else None
