"""The bot store on PostgreSQL: two tables of its own in the datastore's database.

A claim is ``INSERT ... ON CONFLICT DO NOTHING`` on the ``(project, bot, tick)`` primary key:
however many ``worker bots`` processes race for a tick, exactly one insert succeeds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from fhirbots.engine.automation import store_sql as sql
from fhirbots.engine.automation.errors import BotStoreError
from fhirbots.engine.automation.store import Job
from fhirbots.engine.storage.postgres_pool import PostgresPool

__all__ = ["PostgresBotStore"]

POOL_SIZE = 2
"""Connections: claims happen once a minute per bot and jobs are rare."""

SCHEMA_LOCK = 0x6668_626F
"""Advisory lock id serialising table creation between processes starting together."""


class PostgresBotStore:
    """:class:`fhirbots.engine.automation.store.BotStore` on PostgreSQL.

    Args:
        dsn: PostgreSQL connection string.
        migrate: Whether opening creates or upgrades the tables; without, it refuses tables
            that are missing or old (``fhirbots migrate`` makes them).
    """

    def __init__(self, dsn: str, *, migrate: bool = True) -> None:
        self._db = PostgresPool(
            dsn,
            schema=sql.HISTORY,
            migrate=migrate,
            lock=SCHEMA_LOCK,
            size=POOL_SIZE,
            name="bot store",
            error=BotStoreError,
        )

    async def open(self) -> None:
        """Connect and create the tables."""
        await self._db.open()

    async def close(self) -> None:
        """Close the pool."""
        await self._db.close()

    async def claim_tick(self, project: str, bot: str, tick: datetime, owner: str) -> bool:
        """Insert the claim row; True when this call inserted it."""
        inserted = await self._db.count(
            sql.INSERT_CLAIM,
            project,
            bot,
            tick.isoformat(),
            owner,
            datetime.now(tick.tzinfo).isoformat(),
        )
        return inserted == 1

    async def purge_claims(self, older_than: datetime) -> int:
        """Delete claim rows of older ticks."""
        return await self._db.count(sql.PURGE_CLAIMS, older_than.isoformat())

    async def add_job(self, job: Job) -> None:
        """Insert a job row."""
        await self._db.execute(sql.INSERT_JOB, *sql.job_row(job))

    async def finish_job(self, job_id: str, result: dict[str, Any], finished: datetime) -> None:
        """Store a job's result."""
        await self._db.execute(
            sql.FINISH_JOB,
            orjson.dumps(result).decode(),
            finished.isoformat(),
            job_id,
        )

    async def get_job(self, project: str, job_id: str) -> Job | None:
        """Read a job row."""
        rows = await self._db.fetch(sql.SELECT_JOB, job_id, project)
        return sql.row_to_job(rows[0]) if rows else None
