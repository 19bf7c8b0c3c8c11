"""The bot store on PostgreSQL: two tables of its own in the datastore's database.

A claim is ``INSERT ... ON CONFLICT DO NOTHING`` on the ``(project, bot, tick)`` primary key:
however many ``worker bots`` processes race for a tick, exactly one insert succeeds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from fhirbots.engine.automation.errors import BotStoreError
from fhirbots.engine.automation.store import SCHEMA, Job
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
    """

    def __init__(self, dsn: str) -> None:
        self._db = PostgresPool(
            dsn,
            schema=SCHEMA,
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
        status = await self._db.execute(
            "INSERT INTO bot_cron_claims (project, bot, tick, owner, claimed) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            project,
            bot,
            tick.isoformat(),
            owner,
            datetime.now(tick.tzinfo).isoformat(),
        )
        return status == "INSERT 0 1"

    async def purge_claims(self, older_than: datetime) -> int:
        """Delete claim rows of older ticks."""
        status = await self._db.execute(
            "DELETE FROM bot_cron_claims WHERE tick < $1", older_than.isoformat()
        )
        return int(status.split()[-1])

    async def add_job(self, job: Job) -> None:
        """Insert a job row."""
        await self._db.execute(
            "INSERT INTO bot_jobs (id, project, bot, state, result, created) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            job.id,
            job.project,
            job.bot,
            job.state,
            orjson.dumps(job.result).decode() if job.result is not None else None,
            job.created.isoformat(),
        )

    async def finish_job(self, job_id: str, result: dict[str, Any], finished: datetime) -> None:
        """Store a job's result."""
        await self._db.execute(
            "UPDATE bot_jobs SET state = 'done', result = $1, finished = $2 WHERE id = $3",
            orjson.dumps(result).decode(),
            finished.isoformat(),
            job_id,
        )

    async def get_job(self, project: str, job_id: str) -> Job | None:
        """Read a job row."""
        rows = await self._db.fetch(
            "SELECT id, project, bot, state, result, created FROM bot_jobs "
            "WHERE id = $1 AND project = $2",
            job_id,
            project,
        )
        if not rows:
            return None
        row = rows[0]
        return Job(
            id=row[0],
            project=row[1],
            bot=row[2],
            state=row[3],
            result=orjson.loads(row[4]) if row[4] else None,
            created=datetime.fromisoformat(row[5]),
        )
