"""The bot store on SQLite: ``bots.db`` in the data dir (WAL), shared by local processes.

SQLite's write lock makes the ``INSERT`` of a claim row atomic between processes on one host,
which is what ``serve`` plus a few ``worker bots`` processes on the same data dir need.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from fhirbots.engine.automation import store_sql as sql
from fhirbots.engine.automation.errors import BotStoreError
from fhirbots.engine.automation.store import Job
from fhirbots.engine.storage.sqlite_file import SqliteFile

__all__ = ["BOTS_DB", "SqliteBotStore"]

BOTS_DB = "bots.db"
"""File name of the store in the data dir."""


class SqliteBotStore:
    """:class:`fhirbots.engine.automation.store.BotStore` in one SQLite file.

    Args:
        path: The database file (created with its folder).
        migrate: Whether opening creates or upgrades the tables; without, it refuses tables
            that are missing or old (``fhirbots migrate`` makes them).
    """

    def __init__(self, path: Path, *, migrate: bool = True) -> None:
        self.path = path
        self._file = SqliteFile(
            path, schema=sql.HISTORY, name="bot store", error=BotStoreError, migrate=migrate
        )
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
                sql.INSERT_CLAIM,
                (project, bot, tick.isoformat(), owner, datetime.now(tick.tzinfo).isoformat()),
            )
            return cursor.rowcount == 1

        return await self._call(work)

    async def purge_claims(self, older_than: datetime) -> int:
        """Delete claim rows of older ticks."""

        def work() -> int:
            return self._db().execute(sql.PURGE_CLAIMS, (older_than.isoformat(),)).rowcount

        return await self._call(work)

    async def add_job(self, job: Job) -> None:
        """Insert a job row."""

        def work() -> None:
            self._db().execute(sql.INSERT_JOB, sql.job_row(job))

        await self._call(work)

    async def finish_job(self, job_id: str, result: dict[str, Any], finished: datetime) -> None:
        """Store a job's result."""

        def work() -> None:
            self._db().execute(
                sql.FINISH_JOB,
                (orjson.dumps(result).decode(), finished.isoformat(), job_id),
            )

        await self._call(work)

    async def get_job(self, project: str, job_id: str) -> Job | None:
        """Read a job row."""

        def work() -> Job | None:
            row = self._db().execute(sql.SELECT_JOB, (job_id, project)).fetchone()
            return None if row is None else sql.row_to_job(row)

        return await self._call(work)
