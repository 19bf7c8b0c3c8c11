"""The dispatcher on both event-log adapters (embedded and a real Kafka broker), and on the
distributed pair (Kafka + PostgreSQL delivery store)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from fhirbots.engine.delivery.store import DeliveryStore
from fhirbots.engine.eventlog.port import EventLog
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.stages.dispatcher import Dispatcher
from fhirbots.schemas.notifications import Notification
from tests.conftest import postgres_dsn
from tests.engine.scenarios.delivery import (
    FAST,
    PROJECT,
    Harness,
    Receiver,
    running_receiver,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as rec:
        yield rec


class LogHarness(Harness):
    """The delivery harness on a given event log with unique topics and group."""

    def __init__(
        self, engine: Engine, data_dir: Path, log: EventLog, unique: Callable[[str], str]
    ) -> None:
        super().__init__(engine, data_dir, FAST)
        self._log = log
        self.topic = unique("notifications")
        self.changes = unique("changes")
        self.group = unique("dispatcher")

    @property
    def log(self) -> EventLog:
        return self._log

    async def start(self, store: DeliveryStore | None = None, **kwargs: object) -> Dispatcher:
        return await super().start(
            store, topic=self.topic, changes_topic=self.changes, group=self.group, **kwargs
        )

    async def publish(self, *notifications: Notification) -> None:
        for n in notifications:
            await self.log.publish(self.topic, n.key, n.model_dump_json().encode())


@pytest.fixture
async def harness(
    tmp_path: Path, event_log: EventLog, unique: Callable[[str], str]
) -> AsyncIterator[LogHarness]:
    engine = Engine(Settings(data_dir=tmp_path))
    await engine.open()
    await engine.storage.ensure_project(PROJECT, "Project one")
    h = LogHarness(engine, tmp_path, event_log, unique)
    await event_log.create_topic(h.topic, partitions=4)
    yield h
    await h.stop()
    await engine.close()


async def test_order_retries_and_numbers(harness: LogHarness, receiver: Receiver) -> None:
    async def flaky(_: web.Request, count: int) -> web.Response:
        return web.Response(status=500 if count <= 3 else 200)

    receiver.on("/k", flaky)
    await harness.subscription("s1", receiver.url + "/k")
    await harness.start()
    notes = [harness.notification("s1", receiver.url + "/k") for _ in range(5)]
    await harness.publish(*notes)
    got = await receiver.wait_for("/k", 8)
    assert [r.headers["X-Event-Number"] for r in got] == ["1", "1", "1", "1", "2", "3", "4", "5"]


async def test_slow_subscription_does_not_delay_others(
    harness: LogHarness, receiver: Receiver
) -> None:
    release = asyncio.Event()

    async def stuck(_: web.Request, __: int) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    receiver.on("/slow", stuck)
    await harness.subscription("slow", receiver.url + "/slow")
    await harness.subscription("fast", receiver.url + "/fast")
    await harness.start()
    await harness.publish(harness.notification("slow", receiver.url + "/slow"))
    await receiver.wait_for("/slow", 1)
    # The slow endpoint holds its request until released, and it is released only after the
    # fast subscription got all three: they arrive only if nothing waits for the slow one.
    await harness.publish(*(harness.notification("fast", receiver.url + "/fast") for _ in range(3)))
    await receiver.wait_for("/fast", 3)
    assert len(receiver.at("/slow")) == 1
    release.set()


async def test_restart_mid_delivery_keeps_event_number(
    harness: LogHarness, receiver: Receiver
) -> None:
    hang = asyncio.Event()

    async def first_hangs(_: web.Request, count: int) -> web.Response:
        if count == 1:
            await hang.wait()
        return web.Response(status=200)

    receiver.on("/r", first_hangs)
    await harness.subscription("s1", receiver.url + "/r")
    await harness.start()
    await harness.publish(*(harness.notification("s1", receiver.url + "/r") for _ in range(2)))
    await receiver.wait_for("/r", 1)
    await harness.stop()
    hang.set()
    await harness.start()
    got = await receiver.wait_for("/r", 3)
    assert [r.headers["X-Event-Number"] for r in got] == ["1", "1", "2"]


async def test_postgres_store_on_the_same_log(harness: LogHarness, receiver: Receiver) -> None:
    import asyncpg

    from fhirbots.engine.delivery.store_postgres import PostgresDeliveryStore

    dsn = postgres_dsn()
    schema = f"delivery_it_{uuid.uuid4().hex[:12]}"
    await harness.subscription("s1", receiver.url + "/pg")
    await harness.start(PostgresDeliveryStore(dsn, schema=schema))
    try:
        await harness.publish(*(harness.notification("s1", receiver.url + "/pg") for _ in range(3)))
        got = await receiver.wait_for("/pg", 3)
        assert [r.headers["X-Event-Number"] for r in got] == ["1", "2", "3"]
    finally:
        await harness.stop()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()
