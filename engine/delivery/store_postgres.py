"""The delivery store on PostgreSQL: tables of its own in the datastore's database.

Tables are created idempotently on open. Event numbers come from an upsert on the counter row
(``... DO UPDATE SET last_number = last_number + 1 RETURNING``), which row-locks the
subscription's counter until the accepting transaction commits, so two dispatchers can never
hand out the same number.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

from fhirbots.engine.delivery import store_sql as sql
from fhirbots.engine.delivery.errors import DeliveryStoreError
from fhirbots.engine.delivery.store import Accepted, Delivery, SubscriptionCounters
from fhirbots.engine.delivery.store_sql import dead_filter, row_to_delivery
from fhirbots.engine.storage.postgres_pool import DRIVER_ERRORS, PostgresPool
from fhirbots.engine.storage.sql import numbered
from fhirbots.schemas.notifications import Notification

__all__ = ["PostgresDeliveryStore"]

POOL_SIZE = 8
"""Connections: a few lanes write at once; the datastore keeps its own pool."""

SCHEMA_LOCK = 0x6668_6264
"""Advisory lock id serialising table creation between processes starting together."""

# One statement each where SQLite goes row by row: a batch of deliveries is one round trip.
_MARK_DELIVERED = (
    "WITH done AS (UPDATE delivery_notification n SET state = 'delivered',"
    " attempts = d.attempts, updated_at = ? FROM unnest(?::text[], ?::int[]) AS d(id, attempts)"
    " WHERE n.notification_id = d.id RETURNING n.project, n.subscription_id)"
    " UPDATE delivery_counter c SET dead_streak = 0 FROM done"
    " WHERE c.project = done.project AND c.subscription_id = done.subscription_id"
    " AND c.dead_streak <> 0"
)
_MARK_DEAD = (
    f"WITH dead AS ({sql.MARK_DEAD})"
    " UPDATE delivery_counter c SET dead_streak = c.dead_streak + 1 FROM dead"
    " WHERE c.project = dead.project AND c.subscription_id = dead.subscription_id"
    " RETURNING c.dead_streak"
)


class PostgresDeliveryStore:
    """:class:`fhirbots.engine.delivery.store.DeliveryStore` on PostgreSQL.

    Args:
        dsn: PostgreSQL connection string.
        schema: Schema holding the tables (the connection's default when None).
        migrate: Whether opening creates or upgrades the tables; without, it refuses tables
            that are missing or old (``fhirbots migrate`` makes them).
    """

    def __init__(self, dsn: str, *, schema: str | None = None, migrate: bool = True) -> None:
        self._db = PostgresPool(
            dsn,
            schema=sql.HISTORY,
            migrate=migrate,
            lock=SCHEMA_LOCK,
            size=POOL_SIZE,
            name="delivery store",
            error=DeliveryStoreError,
            search_path=schema,
        )

    async def open(self) -> None:
        """Connect and create the tables."""
        await self._db.open()

    async def close(self) -> None:
        """Close the pool."""
        await self._db.close()

    # -- writes ----------------------------------------------------------------------------

    async def accept(self, notifications: Sequence[Notification]) -> list[Accepted]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.accept`."""
        if not notifications:
            return []
        now = time.time()
        out: list[Accepted] = []
        try:
            async with self._db.pool.acquire() as conn, conn.transaction():
                for n in notifications:
                    found = await conn.fetchval(
                        numbered(sql.SELECT_EVENT_NUMBER), n.notification_id
                    )
                    if found is not None:
                        out.append(
                            Accepted(n.notification_id, n.project, n.subscription_id, found, False)
                        )
                        continue
                    number = await conn.fetchval(
                        numbered(sql.NEXT_EVENT_NUMBER), n.project, n.subscription_id
                    )
                    await conn.execute(
                        numbered(sql.INSERT_NOTIFICATION),
                        n.notification_id,
                        n.project,
                        n.subscription_id,
                        number,
                        n.model_dump_json(),
                        now,
                        now,
                    )
                    out.append(
                        Accepted(n.notification_id, n.project, n.subscription_id, number, True)
                    )
        except DRIVER_ERRORS as exc:
            raise DeliveryStoreError(f"delivery store: {exc}") from exc
        return out

    async def record_failure(
        self, notification_id: str, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.record_failure`."""
        await self._db.execute(
            sql.RECORD_FAILURE,
            attempts,
            next_attempt_at,
            error,
            time.time(),
            notification_id,
        )

    async def mark_delivered(self, delivered: Sequence[tuple[str, int]]) -> None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.mark_delivered`."""
        if not delivered:
            return
        await self._db.execute(
            _MARK_DELIVERED,
            time.time(),
            [i for i, _ in delivered],
            [a for _, a in delivered],
        )

    async def mark_dead(self, notification_id: str, attempts: int, error: str) -> int:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.mark_dead`."""
        rows = await self._db.fetch(_MARK_DEAD, attempts, error, time.time(), notification_id)
        return int(rows[0][0]) if rows else 0

    async def requeue(
        self,
        project: str,
        notification_ids: Sequence[str] | None = None,
        subscription_id: str | None = None,
    ) -> list[tuple[str, str]]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.requeue`."""
        where, args = dead_filter(project, notification_ids, subscription_id)
        rows = await self._db.fetch(sql.requeue_dead(where), time.time(), *args)
        return [(r[0], r[1]) for r in rows]

    async def discard(
        self,
        project: str,
        notification_ids: Sequence[str] | None = None,
        subscription_id: str | None = None,
    ) -> int:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.discard`."""
        where, args = dead_filter(project, notification_ids, subscription_id)
        return await self._db.count(sql.discard_dead(where), time.time(), *args)

    async def set_heartbeat(self, project: str, subscription_id: str, period: float | None) -> None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.set_heartbeat`."""
        if period is None:
            await self._db.execute(sql.DELETE_HEARTBEAT, project, subscription_id)
            return
        await self._db.execute(sql.UPSERT_HEARTBEAT, project, subscription_id, period)

    async def heartbeats(self) -> list[tuple[str, str, float]]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.heartbeats`."""
        rows = await self._db.fetch(sql.SELECT_HEARTBEATS)
        return [(r[0], r[1], float(r[2])) for r in rows]

    async def purge(self, before: datetime) -> int:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.purge`."""
        return await self._db.count(sql.PURGE, before.timestamp())

    # -- reads -----------------------------------------------------------------------------

    async def _select(self, statement: str, *args: object) -> list[Delivery]:
        return [row_to_delivery(r) for r in await self._db.fetch(statement, *args)]

    async def get(self, project: str, notification_id: str) -> Delivery | None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.get`."""
        found = await self._select(sql.SELECT_DELIVERY, notification_id, project)
        return found[0] if found else None

    async def pending(
        self, project: str, subscription_id: str, *, limit: int = 100
    ) -> list[Delivery]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.pending`."""
        return await self._select(sql.SELECT_PENDING, project, subscription_id, limit)

    async def pending_subscriptions(self) -> list[tuple[str, str]]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.pending_subscriptions`."""
        rows = await self._db.fetch(sql.SELECT_PENDING_SUBSCRIPTIONS)
        return [(r[0], r[1]) for r in rows]

    async def counters(self, project: str, subscription_id: str) -> SubscriptionCounters:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.counters`."""
        rows = await self._db.fetch(sql.SELECT_COUNTERS, project, subscription_id)
        if not rows:
            return SubscriptionCounters()
        return SubscriptionCounters(int(rows[0][0]), int(rows[0][1]))

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
            project,
            subscription_id,
            first or 0,
            last or 2**62,
            limit,
        )

    async def last_event(self, project: str, subscription_id: str) -> Delivery | None:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.last_event`."""
        found = await self._select(sql.SELECT_LAST_EVENT, project, subscription_id)
        return found[0] if found else None

    async def dead_letters(
        self, project: str, subscription_id: str | None = None, *, limit: int = 100
    ) -> list[Delivery]:
        """See :meth:`fhirbots.engine.delivery.store.DeliveryStore.dead_letters`."""
        where, args = dead_filter(project, None, subscription_id)
        return await self._select(sql.select_dead(where), *args, limit)
