"""The delivery store contract on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhirbots.engine.delivery.store import DeliveryStore
from fhirbots.engine.delivery.store_sqlite import SqliteDeliveryStore
from fhirbots.schemas.notifications import ChannelSpec, Notification
from tests.conftest import POSTGRES, postgres_dsn


def _note(sub: str, n: int, project: str = "p1") -> Notification:
    return Notification(
        notification_id=f"{project}:{sub}:{n}",
        project=project,
        subscription_id=sub,
        subscription_version="1",
        event_id=f"e{n}",
        interaction="update",
        resource_type="Observation",
        resource_id=f"o{n}",
        version_id="2",
        resource={"resourceType": "Observation", "id": f"o{n}"},
        time=datetime.now(UTC),
        channel=ChannelSpec(endpoint="https://example.org/hook"),
    )


@pytest.fixture(params=["sqlite", POSTGRES])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DeliveryStore]:
    if request.param == "sqlite":
        opened: DeliveryStore = SqliteDeliveryStore(tmp_path / "delivery.db")
        await opened.open()
        yield opened
        await opened.close()
        return
    import asyncpg

    from fhirbots.engine.delivery.store_postgres import PostgresDeliveryStore

    dsn = postgres_dsn()
    schema = f"delivery_test_{uuid.uuid4().hex[:12]}"
    opened = PostgresDeliveryStore(dsn, schema=schema)
    await opened.open()
    yield opened
    await opened.close()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


async def test_numbers_per_subscription_and_idempotent(store: DeliveryStore) -> None:
    accepted = await store.accept([_note("a", 1), _note("b", 1), _note("a", 2), _note("a", 3)])
    assert [(a.subscription_id, a.event_number, a.new) for a in accepted] == [
        ("a", 1, True),
        ("b", 1, True),
        ("a", 2, True),
        ("a", 3, True),
    ]
    again = await store.accept([_note("a", 2), _note("a", 4)])
    assert [(a.event_number, a.new) for a in again] == [(2, False), (4, True)]
    assert (await store.counters("p1", "a")).events_since_start == 4
    assert (await store.counters("p1", "zzz")).events_since_start == 0
    pending = await store.pending("p1", "a")
    assert [d.event_number for d in pending] == [1, 2, 3, 4]
    assert pending[0].notification == _note("a", 1).model_copy(
        update={"time": pending[0].notification.time}
    )
    assert sorted(await store.pending_subscriptions()) == [("p1", "a"), ("p1", "b")]


async def test_concurrent_accepts_never_share_a_number(store: DeliveryStore) -> None:
    batches = [[_note("a", i * 10 + j) for j in range(5)] for i in range(8)]
    results = await asyncio.gather(*(store.accept(b) for b in batches))
    numbers = sorted(a.event_number for r in results for a in r)
    assert numbers == list(range(1, 41))


async def test_failure_delivery_dead_letters_requeue_discard(store: DeliveryStore) -> None:
    await store.accept([_note("a", i) for i in range(1, 5)])
    await store.record_failure("p1:a:1", 1, 123.5, "HTTP 500")
    row = await store.get("p1", "p1:a:1")
    assert row is not None and row.attempts == 1 and row.next_attempt_at == 123.5
    assert row.last_error == "HTTP 500" and row.state == "pending"
    assert await store.mark_dead("p1:a:1", 3, "HTTP 500") == 1
    assert await store.mark_dead("p1:a:2", 3, "timeout") == 2
    assert (await store.counters("p1", "a")).dead_streak == 2
    await store.mark_delivered([("p1:a:3", 1)])
    assert (await store.counters("p1", "a")).dead_streak == 0
    dead = await store.dead_letters("p1")
    assert [d.event_number for d in dead] == [1, 2]
    assert await store.dead_letters("other") == []
    assert await store.requeue("p1", ["p1:a:1"]) == [("p1", "a")]
    row = await store.get("p1", "p1:a:1")
    assert row is not None and row.state == "pending" and row.attempts == 0
    assert row.event_number == 1
    assert await store.discard("p1", subscription_id="a") == 1
    assert await store.dead_letters("p1") == []
    assert await store.requeue("p1", []) == []
    assert await store.get("other", "p1:a:1") is None


async def test_events_range_last_and_purge(store: DeliveryStore) -> None:
    await store.accept([_note("a", i) for i in range(1, 8)])
    events = await store.events("p1", "a", first=3, last=5)
    assert [d.event_number for d in events] == [3, 4, 5]
    assert [d.event_number for d in await store.events("p1", "a", first=6)] == [6, 7]
    last = await store.last_event("p1", "a")
    assert last is not None and last.event_number == 7
    await store.mark_delivered([("p1:a:1", 1)])
    assert await store.purge(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert [d.event_number for d in await store.events("p1", "a", last=2)] == [2]


async def test_heartbeat_registrations(store: DeliveryStore) -> None:
    await store.set_heartbeat("p1", "a", 30)
    await store.set_heartbeat("p1", "b", 5)
    await store.set_heartbeat("p1", "a", 60)
    assert sorted(await store.heartbeats()) == [("p1", "a", 60.0), ("p1", "b", 5.0)]
    await store.set_heartbeat("p1", "b", None)
    assert await store.heartbeats() == [("p1", "a", 60.0)]
