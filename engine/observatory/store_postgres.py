"""The observatory store on PostgreSQL: tables of its own in the datastore's database.

Tables are created idempotently on open. Adding a window is an upsert that adds counts and
buckets; it row-locks the window until the transaction commits, so a second writer adding the
same window waits, then adds to the first one's result.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from fhirbots.engine.observatory import store_sql as sql
from fhirbots.engine.observatory.errors import ObservatoryStoreError
from fhirbots.engine.observatory.model import ActivityRow, LagSample, Metric, SeriesPoint, WindowRow
from fhirbots.engine.storage.postgres_pool import DRIVER_ERRORS, PostgresPool, rows_changed
from fhirbots.engine.storage.sql import numbered
from fhirbots.schemas.executions import BotExecutionRecord

__all__ = ["PostgresObservatoryStore"]

POOL_SIZE = 4
"""Connections: one statistics writer, and dashboard readers (a page draws a few charts)."""

SCHEMA_LOCK = 0x6668_6F73
"""Advisory lock id serialising table creation between processes starting together."""


class PostgresObservatoryStore:
    """:class:`fhirbots.engine.observatory.store.ObservatoryStore` on PostgreSQL.

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
            name="observatory store",
            error=ObservatoryStoreError,
        )

    async def open(self) -> None:
        """Connect and create the tables."""
        await self._db.open()

    async def close(self) -> None:
        """Close the pool."""
        await self._db.close()

    @contextlib.asynccontextmanager
    async def _connection(self, *, transaction: bool = False) -> AsyncIterator[Any]:
        """A connection of the pool (in a transaction if asked); driver errors raised inside
        become :class:`ObservatoryStoreError`."""
        pool = self._db.pool
        try:
            async with pool.acquire() as conn:
                if not transaction:
                    yield conn
                    return
                async with conn.transaction():
                    yield conn
        except DRIVER_ERRORS as exc:
            raise ObservatoryStoreError(f"observatory store: {exc}") from exc

    async def _fetch(self, statement: str, args: Sequence[object]) -> list[Any]:
        async with self._connection() as conn:
            rows: list[Any] = await conn.fetch(numbered(statement), *args)
        return rows

    # -- writes ----------------------------------------------------------------------------

    async def add_windows(self, rows: Sequence[WindowRow]) -> None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.add_windows`."""
        await self._insert_many(sql.ADD_WINDOW, [sql.window_args(r) for r in sql.combine(rows)])

    async def _insert_many(self, statement: str, args: list[tuple[object, ...]]) -> None:
        if args:
            async with self._connection(transaction=True) as conn:
                await conn.executemany(numbered(statement), args)

    async def add_lag(self, samples: Sequence[LagSample]) -> None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.add_lag`."""
        await self._insert_many(sql.INSERT_LAG, [sql.lag_args(s) for s in samples])

    async def add_executions(self, records: Sequence[BotExecutionRecord]) -> None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.add_executions`."""
        await self._insert_many(sql.INSERT_EXECUTION, [sql.execution_args(r) for r in records])

    async def add_activity(self, rows: Sequence[ActivityRow]) -> None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.add_activity`."""
        await self._insert_many(sql.INSERT_ACTIVITY, [sql.activity_args(r) for r in rows])

    async def put_session(self, token_hash: str, session: str, expires: datetime) -> None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.put_session`."""
        await self._insert_many(sql.PUT_SESSION, [(token_hash, session, sql.to_us(expires))])

    async def get_session(self, token_hash: str) -> str | None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.get_session`."""
        now = sql.to_us(datetime.now(UTC))
        rows = await self._fetch(sql.SELECT_SESSION, (token_hash, now))
        return str(rows[0][0]) if rows else None

    async def delete_session(self, token_hash: str) -> None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.delete_session`."""
        await self._insert_many(sql.DELETE_SESSION, [(token_hash,)])

    async def purge(self, before: datetime) -> int:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.purge`."""
        cutoff = sql.to_us(before)
        deleted = 0
        async with self._connection(transaction=True) as conn:
            for statement in sql.PURGE:
                deleted += rows_changed(await conn.execute(numbered(statement), cutoff))
        return deleted

    # -- reads -----------------------------------------------------------------------------

    async def series(
        self,
        project: str | None,
        metric: Metric,
        since: datetime,
        until: datetime,
        step: timedelta,
        dims: tuple[str | None, ...] = (),
    ) -> list[SeriesPoint]:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.series`."""
        statement, args = sql.windows_query(project, metric, since, until, step, dims)
        return sql.series_of(await self._fetch(statement, args), metric, since, step, dims)

    async def lag(self, since: datetime, group: str | None = None) -> list[LagSample]:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.lag`."""
        statement, args = sql.lag_query(since, group)
        return [sql.lag_of(r) for r in await self._fetch(statement, args)]

    async def executions(
        self,
        project: str,
        *,
        bot: str | None = None,
        status: str | None = None,
        before: datetime | None = None,
        limit: int = 50,
    ) -> list[BotExecutionRecord]:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.executions`."""
        statement, args = sql.executions_query(project, bot, status, before, limit)
        return [sql.execution_of(r) for r in await self._fetch(statement, args)]

    async def execution(self, project: str, execution_id: str) -> BotExecutionRecord | None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.execution`."""
        rows = await self._fetch(sql.SELECT_EXECUTION, (project, execution_id))
        return sql.execution_of(rows[0]) if rows else None

    async def trace(self, project: str, trace_id: str) -> list[ActivityRow]:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.trace`."""
        rows = await self._fetch(sql.SELECT_TRACE, (project, trace_id))
        return [sql.activity_of(r) for r in rows]

    async def trace_of(self, project: str, ref: str) -> str | None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.trace_of`."""
        rows = await self._fetch(sql.SELECT_TRACE_OF, (project, ref))
        return str(rows[0][0]) if rows else None
