"""A Bot as the runtime loaded it: the value the runtime and the cron scheduler pass around.

It lives apart from both so that :mod:`fhirbots.engine.automation.scheduler` can name it in
the port it needs (:class:`fhirbots.engine.automation.scheduler.BotRunner`) without importing
the runtime that builds the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhirbots.schemas.bot import Bot

__all__ = ["LoadedBot"]


@dataclass(frozen=True)
class LoadedBot:
    """A Bot as stored, validated.

    Attributes:
        bot: The validated Bot.
        version: Its ``meta.versionId``.
    """

    bot: Bot
    version: str
