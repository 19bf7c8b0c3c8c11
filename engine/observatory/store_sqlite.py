"""The observatory store on SQLite: ``observatory.db`` in the data dir (WAL), one thread.

A file of its own, so the dashboard's data never competes with the datastore's writer. A batch
is written in one ``BEGIN IMMEDIATE`` transaction, which takes the file's write lock at once
rather than on its first write (a deferred transaction that finds the lock taken then fails
instead of waiting).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from fhirbots.engine.observatory import store_sql as sql
from fhirbots.engine.observatory.errors import ObservatoryStoreError
from fhirbots.engine.observatory.model import ActivityRow, LagSample, Metric, SeriesPoint, WindowRow
from fhirbots.engine.storage.sqlite_file import SqliteFile
from fhirbots.schemas.executions import BotExecutionRecord

__all__ = ["OBSERVATORY_DB", "SqliteObservatoryStore"]

OBSERVATORY_DB = "observatory.db"
"""File name of the store in the data dir."""

SYNCHRONOUS = "NORMAL"
"""Statistics can be rebuilt from nothing and are written every few seconds: a power loss may
take the last commits (never the file's consistency, in WAL mode), which is not worth a sync
of the disk on every commit."""

_T = TypeVar("_T")


class SqliteObservatoryStore:
    """:class:`fhirbots.engine.observatory.store.ObservatoryStore` in one SQLite file.

    Args:
        path: The database file (created with its folder).
        migrate: Whether opening creates or upgrades the tables; without, it refuses tables
            that are missing or old (``fhirbots migrate`` makes them).
    """

    def __init__(self, path: Path, *, migrate: bool = True) -> None:
        self.path = path
        self._file = SqliteFile(
            path,
            schema=sql.HISTORY,
            migrate=migrate,
            name="observatory store",
            error=ObservatoryStoreError,
            synchronous=SYNCHRONOUS,
        )
        self._call = self._file.call
        # Reads have a connection and a thread of their own (WAL lets them read while the
        # statistics stage writes): a page's query does not queue behind a thousand trace
        # steps a second.
        self._reader = SqliteFile(
            path,
            schema=None,
            name="observatory store",
            error=ObservatoryStoreError,
            synchronous=SYNCHRONOUS,
        )
        self._read = self._reader.call

    async def open(self) -> None:
        """Open the file and create the tables."""
        await self._file.open()
        await self._reader.open()

    async def close(self) -> None:
        """Close the file."""
        await self._reader.close()
        await self._file.close()

    def _transaction(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        db = self._file.conn
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def _fetch(self, statement: str, args: Sequence[object]) -> list[tuple[object, ...]]:
        return self._reader.conn.execute(statement, tuple(args)).fetchall()

    # -- writes ----------------------------------------------------------------------------

    async def add_windows(self, rows: Sequence[WindowRow]) -> None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.add_windows`."""
        await self._insert_many(sql.ADD_WINDOW, [sql.window_args(r) for r in sql.combine(rows)])

    async def _insert_many(self, statement: str, args: list[tuple[object, ...]]) -> None:
        def run(db: sqlite3.Connection) -> None:
            # The cursor stays on the store's thread: one freed on another thread while this
            # thread uses the connection is an API misuse SQLite reports.
            db.executemany(statement, args).close()

        if args:
            await self._call(self._transaction, run)

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
        rows = await self._read(self._fetch, sql.SELECT_SESSION, (token_hash, now))
        return str(rows[0][0]) if rows else None

    async def delete_session(self, token_hash: str) -> None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.delete_session`."""
        await self._insert_many(sql.DELETE_SESSION, [(token_hash,)])

    async def purge(self, before: datetime) -> int:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.purge`."""
        cutoff = sql.to_us(before)

        def run(db: sqlite3.Connection) -> int:
            return sum(db.execute(statement, (cutoff,)).rowcount for statement in sql.PURGE)

        return await self._call(self._transaction, run)

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
        rows = await self._read(self._fetch, statement, args)
        return sql.series_of(rows, metric, since, step, dims)

    async def lag(self, since: datetime, group: str | None = None) -> list[LagSample]:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.lag`."""
        statement, args = sql.lag_query(since, group)
        return [sql.lag_of(r) for r in await self._read(self._fetch, statement, args)]

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
        return [sql.execution_of(r) for r in await self._read(self._fetch, statement, args)]

    async def execution(self, project: str, execution_id: str) -> BotExecutionRecord | None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.execution`."""
        rows = await self._read(self._fetch, sql.SELECT_EXECUTION, (project, execution_id))
        return sql.execution_of(rows[0]) if rows else None

    async def trace(self, project: str, trace_id: str) -> list[ActivityRow]:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.trace`."""
        rows = await self._read(self._fetch, sql.SELECT_TRACE, (project, trace_id))
        return [sql.activity_of(r) for r in rows]

    async def trace_of(self, project: str, ref: str) -> str | None:
        """See :meth:`fhirbots.engine.observatory.store.ObservatoryStore.trace_of`."""
        rows = await self._read(self._fetch, sql.SELECT_TRACE_OF, (project, ref))
        return str(rows[0][0]) if rows else None
