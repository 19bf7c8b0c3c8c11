"""The ``Bot/<id>`` endpoint: the notification is handed to the bot executor.

The dispatcher depends only on the :class:`BotInvoker` protocol; the bots integration
implements it on top of :class:`fhirbots.bots.executor.BotExecutor`. Until one is configured, a
notification for a bot fails like an unreachable endpoint (retried, then dead-lettered) so
nothing is lost and it can be replayed once bots run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from fhirbots.schemas.notifications import Notification

__all__ = ["BOT_ENDPOINT", "BotInvocation", "BotInvoker", "bot_id_of"]

BOT_ENDPOINT = re.compile(r"^Bot/([A-Za-z0-9\-.]{1,64})$")
"""An endpoint naming a bot."""


@dataclass(frozen=True)
class BotInvocation:
    """What running a bot on a notification gave.

    Attributes:
        success: The bot ran to completion.
        message: Its error (or a summary of its output) in words.
    """

    success: bool
    message: str | None = None


class BotInvoker(Protocol):
    """Runs a bot on a notification (implemented by the bots integration)."""

    async def invoke(
        self, project: str, bot_id: str, notification: Notification, idempotency_key: str
    ) -> BotInvocation:
        """Run ``Bot/<bot_id>`` of ``project`` on ``notification``.

        Args:
            project: Project of the subscription (and of the bot).
            bot_id: Id of the Bot resource.
            notification: What matched; ``notification.resource`` is the bot's input.
            idempotency_key: Stable per notification (``<subscription>:<event number>``),
                the same on every retry.

        Returns:
            The outcome; failures are values, not exceptions.
        """
        ...


def bot_id_of(endpoint: str | None) -> str | None:
    """The bot id if ``endpoint`` is ``Bot/<id>``, else None."""
    match = BOT_ENDPOINT.match(endpoint or "")
    return match.group(1) if match else None
