"""The delivery store on SQLite: ``delivery.db`` in the data dir (WAL), one writer thread.

A file of its own, so delivery bookkeeping never competes with the datastore's writer.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from fhirbots.engine.delivery import store_sql as sql
from fhirbots.engine.delivery.errors import DeliveryStoreError
from fhirbots.engine.delivery.store import Accepted, Delivery, SubscriptionCounters
from fhirbots.engine.delivery.store_sql import dead_filter, row_to_delivery
from fhirbots.engine.storage.sqlite_file import SqliteFile
from fhirbots.schemas.notifications import Notification

__all__ = ["DELIVERY_DB", "SqliteDeliveryStore"]

DELIVERY_DB = "delivery.db"
"""File name of the store in the data dir."""

_T = TypeVar("_T")

# SQLite has no UPDATE inside WITH and no arrays: it marks row by row, in one transaction.
_MARK_DELIVERED = (
    "UPDATE delivery_notification SET state = 'delivered', attempts = ?, updated_at = ?"
    " WHERE notification_id = ? RETURNING project, subscription_id"
)
_RESET_DEAD_STREAK = (
    "UPDATE delivery_counter SET dead_streak = 0"
    " WHERE project = ? AND subscription_id = ? AND dead_streak <> 0"
)
_COUNT_DEAD = (
    "UPDATE delivery_counter SET dead_streak = dead_streak + 1"
    " WHERE project = ? AND subscription_id = ? RETURNING dead_streak"
)


class SqliteDeliveryStore:
    """:class:`fhirbots.engine.delivery.store.DeliveryStore` in one SQLite file.

    Args:
        path: The database file (created with its folder).
        synchronous: SQLite ``synchronous`` pragma; ``FULL`` keeps accepted notifications
            through a power loss, ``NORMAL`` only through a process crash.
        migrate: Whether opening creates or upgrades the tables; without, it refuses tables
            that are missing or old (``fhirbots migrate`` makes them).
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL", migrate: bool = True) -> None:
        self.path = path
        self._file = SqliteFile(
            path,
            schema=sql.HISTORY,
            migrate=migrate,
            name="delivery store",
            error=DeliveryStoreError,
            synchronous=synchronous,
        )
        self._call = self._file.call

    async def open(self) -> None:
        """Open the file and create the tables."""
        await self._file.open()

    async def close(self) -> None:
        """Close the file."""
        await self._file.close()

    @property
    def _db(self) -> sqlite3.Connection:
        return self._file.conn

    def _transaction(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    # -- writes ----------------------------------------------------------------------------

    async def accept(self, notifications: Sequence[Notification]) -> list[Accepted]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.accept`."""
        if not notifications:
            return []
        return await self._call(self._transaction, lambda db: self._accept(db, notifications))

    @staticmethod
    def _accept(db: sqlite3.Connection, notifications: Sequence[Notification]) -> list[Accepted]:
        now = time.time()
        out: list[Accepted] = []
        for n in notifications:
            found = db.execute(sql.SELECT_EVENT_NUMBER, (n.notification_id,)).fetchone()
            if found is not None:
                out.append(
                    Accepted(n.notification_id, n.project, n.subscription_id, found[0], False)
                )
                continue
            (number,) = db.execute(sql.NEXT_EVENT_NUMBER, (n.project, n.subscription_id)).fetchone()
            db.execute(
                sql.INSERT_NOTIFICATION,
                (
                    n.notification_id,
                    n.project,
                    n.subscription_id,
                    number,
                    n.model_dump_json(),
                    now,
                    now,
                ),
            )
            out.append(Accepted(n.notification_id, n.project, n.subscription_id, number, True))
        return out

    async def record_failure(
        self, notification_id: str, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.record_failure`."""
        await self._call(
            self._db.execute,
            sql.RECORD_FAILURE,
            (attempts, next_attempt_at, error, time.time(), notification_id),
        )

    async def mark_delivered(self, delivered: Sequence[tuple[str, int]]) -> None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.mark_delivered`."""
        if not delivered:
            return

        def run(db: sqlite3.Connection) -> None:
            now = time.time()
            subscriptions: set[tuple[str, str]] = set()
            for notification_id, attempts in delivered:
                row = db.execute(_MARK_DELIVERED, (attempts, now, notification_id)).fetchone()
                if row is not None:
                    subscriptions.add((row[0], row[1]))
            for key in subscriptions:
                db.execute(_RESET_DEAD_STREAK, key)

        await self._call(self._transaction, run)

    async def mark_dead(self, notification_id: str, attempts: int, error: str) -> int:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.mark_dead`."""

        def run(db: sqlite3.Connection) -> int:
            row = db.execute(
                sql.MARK_DEAD, (attempts, error, time.time(), notification_id)
            ).fetchone()
            if row is None:
                return 0
            (streak,) = db.execute(_COUNT_DEAD, tuple(row)).fetchone()
            return int(streak)

        return await self._call(self._transaction, run)

    async def requeue(
        self,
        project: str,
        notification_ids: Sequence[str] | None = None,
        subscription_id: str | None = None,
    ) -> list[tuple[str, str]]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.requeue`."""
        where, args = dead_filter(project, notification_ids, subscription_id)

        def run(db: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = db.execute(sql.requeue_dead(where), (time.time(), *args)).fetchall()
            return [(r[0], r[1]) for r in rows]

        return await self._call(self._transaction, run)

    async def discard(
        self,
        project: str,
        notification_ids: Sequence[str] | None = None,
        subscription_id: str | None = None,
    ) -> int:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.discard`."""
        where, args = dead_filter(project, notification_ids, subscription_id)

        def run(db: sqlite3.Connection) -> int:
            return db.execute(sql.discard_dead(where), (time.time(), *args)).rowcount

        return await self._call(self._transaction, run)

    async def set_heartbeat(self, project: str, subscription_id: str, period: float | None) -> None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.set_heartbeat`."""
        if period is None:
            await self._call(self._db.execute, sql.DELETE_HEARTBEAT, (project, subscription_id))
        else:
            await self._call(
                self._db.execute, sql.UPSERT_HEARTBEAT, (project, subscription_id, period)
            )

    async def heartbeats(self) -> list[tuple[str, str, float]]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.heartbeats`."""
        rows = await self._call(lambda: self._db.execute(sql.SELECT_HEARTBEATS).fetchall())
        return [(r[0], r[1], float(r[2])) for r in rows]

    async def purge(self, before: datetime) -> int:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.purge`."""

        def run(db: sqlite3.Connection) -> int:
            return db.execute(sql.PURGE, (before.timestamp(),)).rowcount

        return await self._call(self._transaction, run)

    # -- reads -----------------------------------------------------------------------------

    async def _select(self, statement: str, args: Sequence[object]) -> list[Delivery]:
        rows = await self._call(lambda: self._db.execute(statement, tuple(args)).fetchall())
        return [row_to_delivery(r) for r in rows]

    async def get(self, project: str, notification_id: str) -> Delivery | None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.get`."""
        found = await self._select(sql.SELECT_DELIVERY, (notification_id, project))
        return found[0] if found else None

    async def pending(
        self, project: str, subscription_id: str, *, limit: int = 100
    ) -> list[Delivery]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.pending`."""
        return await self._select(sql.SELECT_PENDING, (project, subscription_id, limit))

    async def pending_subscriptions(self) -> list[tuple[str, str]]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.pending_subscriptions`."""
        rows = await self._call(
            lambda: self._db.execute(sql.SELECT_PENDING_SUBSCRIPTIONS).fetchall()
        )
        return [(r[0], r[1]) for r in rows]

    async def counters(self, project: str, subscription_id: str) -> SubscriptionCounters:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.counters`."""
        row = await self._call(
            lambda: self._db.execute(sql.SELECT_COUNTERS, (project, subscription_id)).fetchone()
        )
        if row is None:
            return SubscriptionCounters()
        return SubscriptionCounters(int(row[0]), int(row[1]))

    async def events(
        self,
        project: str,
        subscription_id: str,
        *,
        first: int | None = None,
        last: int | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.events`."""
        return await self._select(
            sql.SELECT_EVENTS,
            (project, subscription_id, first or 0, last or 2**62, limit),
        )

    async def last_event(self, project: str, subscription_id: str) -> Delivery | None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.last_event`."""
        found = await self._select(sql.SELECT_LAST_EVENT, (project, subscription_id))
        return found[0] if found else None

    async def dead_letters(
        self, project: str, subscription_id: str | None = None, *, limit: int = 100
    ) -> list[Delivery]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.dead_letters`."""
        where, args = dead_filter(project, None, subscription_id)
        return await self._select(sql.select_dead(where), (*args, limit))
