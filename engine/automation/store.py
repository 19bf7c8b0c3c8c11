"""The bot store port: cron claims (one run per bot and tick) and ``$execute`` async jobs.

Adapters: :class:`fhirbots.engine.automation.store_sqlite.SqliteBotStore` (``bots.db`` in the data
dir) and
:class:`fhirbots.engine.automation.store_postgres.PostgresBotStore` (tables in the datastore's
database). Both rely on a primary key for mutual exclusion: the process whose ``INSERT`` of the
``(project, bot, tick)`` row succeeds runs that tick; every other process finds the row taken.
Their tables and statements are written once, in :mod:`fhirbots.engine.automation.store_sql`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

__all__ = ["BotStore", "Job", "JobState"]

JobState = Literal["running", "done"]
"""A job runs until its execution ended (successfully or not)."""


@dataclass(frozen=True)
class Job:
    """An asynchronous ``$execute`` (``Prefer: respond-async``).

    Attributes:
        id: Job id (in the status URL).
        project: Project of the caller; other projects cannot see the job.
        bot: ``Bot/<id>`` that runs.
        state: ``running`` or ``done``.
        result: The execution's outcome once done (see
        :func:`fhirbots.engine.automation.runtime.result_json`). created: When it was accepted.
    """

    id: str
    project: str
    bot: str
    state: JobState
    result: dict[str, Any] | None
    created: datetime


class BotStore(Protocol):
    """Where bot processes coordinate."""

    async def open(self) -> None:
        """Connect and create the tables."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def claim_tick(self, project: str, bot: str, tick: datetime, owner: str) -> bool:
        """Claim the run of ``bot`` at cron ``tick``; True for exactly one caller per tick."""
        ...

    async def purge_claims(self, older_than: datetime) -> int:
        """Forget claims of ticks before ``older_than``; returns how many."""
        ...

    async def add_job(self, job: Job) -> None:
        """Record an accepted job."""
        ...

    async def finish_job(self, job_id: str, result: dict[str, Any], finished: datetime) -> None:
        """Mark a job done with its result."""
        ...

    async def get_job(self, project: str, job_id: str) -> Job | None:
        """A job of ``project``, or None."""
        ...
