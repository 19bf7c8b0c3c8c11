"""The bot store on SQLite: ``bots.db`` in the data dir (WAL), shared by local processes.

SQLite's write lock makes the ``INSERT`` of a claim row atomic between processes on one host,
which is what ``serve`` plus a few ``worker bots`` processes on the same data dir need.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fhirbots.engine.automation.errors import BotStoreError
from fhirbots.engine.automation.store import SCHEMA, Job
from fhirbots.engine.storage.sqlite_file import SqliteFile

__all__ = ["BOTS_DB", "SqliteBotStore"]

BOTS_DB = "bots.db"
"""File name of the store in the data dir."""

_T = TypeVar("_T")


def _row_to_job(row: tuple[Any, ...]) -> Job:
    return Job(
        id=row[0],
        project=row[1],
        bot=row[2],
        state=row[3],
        result=orjson.loads(row[4]) if row[4] else None,
        created=datetime.fromisoformat(row[5]),
    )


class SqliteBotStore:
    """:class:`fhirbots.engine.automation.store.BotStore` in one SQLite file.

    Args:
        path: The database file (created with its folder).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = SqliteFile(path, schema=SCHEMA, name="bot store", error=BotStoreError)
        self._call = self._file.call

    async def open(self) -> None:
        """Open the file and create the tables."""
        await self._file.open()

    async def close(self) -> None:
        """Close the file."""
        await self._file.close()

    def _db(self) -> sqlite3.Connection:
        return self._file.conn

    async def claim_tick(self, project: str, bot: str, tick: datetime, owner: str) -> bool:
        """Insert the claim row; True when this call inserted it."""

        def work() -> bool:
            cursor = self._db().execute(
                "INSERT INTO bot_cron_claims (project, bot, tick, owner, claimed) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (project, bot, tick.isoformat(), owner, datetime.now(tick.tzinfo).isoformat()),
            )
            return cursor.rowcount == 1

        return await self._call(work)

    async def purge_claims(self, older_than: datetime) -> int:
        """Delete claim rows of older ticks."""

        def work() -> int:
            cursor = self._db().execute(
                "DELETE FROM bot_cron_claims WHERE tick < ?", (older_than.isoformat(),)
            )
            return cursor.rowcount

        return await self._call(work)

    async def add_job(self, job: Job) -> None:
        """Insert a job row."""

        def work() -> None:
            self._db().execute(
                "INSERT INTO bot_jobs (id, project, bot, state, result, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.project,
                    job.bot,
                    job.state,
                    orjson.dumps(job.result).decode() if job.result is not None else None,
                    job.created.isoformat(),
                ),
            )

        await self._call(work)

    async def finish_job(self, job_id: str, result: dict[str, Any], finished: datetime) -> None:
        """Store a job's result."""

        def work() -> None:
            self._db().execute(
                "UPDATE bot_jobs SET state = 'done', result = ?, finished = ? WHERE id = ?",
                (orjson.dumps(result).decode(), finished.isoformat(), job_id),
            )

        await self._call(work)

    async def get_job(self, project: str, job_id: str) -> Job | None:
        """Read a job row."""

        def work() -> Job | None:
            row = (
                self._db()
                .execute(
                    "SELECT id, project, bot, state, result, created FROM bot_jobs "
                    "WHERE id = ? AND project = ?",
                    (job_id, project),
                )
                .fetchone()
            )
            return None if row is None else _row_to_job(tuple(row))

        return await self._call(work)
