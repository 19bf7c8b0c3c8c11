"""Exceptions of the engine's bot integration.

Errors a client of the HTTP API sees are :class:`fhirbots.engine.errors.FhirError` values (404 for
an unknown bot, 422 for a refused deploy); failures of a bot's own code are
:class:`fhirbots.bots.executor.ExecutionResult` values. What remains is raised from here::

    FhirbotsError          (fhirbots.schemas.errors)
    └── BotRuntimeError    root of this package's exceptions
        └── BotStoreError  the cron-claim / async-job store failed (database error)

The store adapters translate ``sqlite3`` and asyncpg errors into ``BotStoreError``.
"""

from __future__ import annotations

from fhirbots.schemas.errors import FhirbotsError

__all__ = ["BotRuntimeError", "BotStoreError"]


class BotRuntimeError(FhirbotsError):
    """Root of every exception raised by :mod:`fhirbots.engine.automation`."""


class BotStoreError(BotRuntimeError):
    """The bot store (cron claims, async jobs) could not be read or written."""
