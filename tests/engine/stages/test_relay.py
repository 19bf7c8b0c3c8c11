"""The outbox relay: every committed change reaches fhir.changes.v1, a crash loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest

from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings
from fhirbots.engine.eventlog.port import EventLog, OutgoingMessage, Record
from fhirbots.engine.stages.relay import OutboxRelay
from fhirbots.engine.storage.model import DeleteOp, UpdateOp, WriteContext
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.topics import CHANGES
from tests.waiting import eventually


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    event_log = EmbeddedEventLog(EmbeddedSettings.in_data_dir(tmp_path / "log"))
    await event_log.start()
    await event_log.create_topic(CHANGES, partitions=4)
    yield event_log
    await event_log.stop()


async def read_all(log: EventLog, expected: int) -> list[Record]:
    seen: list[Record] = []
    done = asyncio.Event()

    async def handler(batch: list[Record]) -> None:
        seen.extend(batch)
        if len(seen) >= expected:
            done.set()

    handle = await log.consume([CHANGES], "reader", handler)
    await eventually(done.wait, f"{expected} records on {CHANGES}")
    await handle.stop()
    return seen


async def write(storage: Storage, n: int) -> None:
    for i in range(n):
        resource = {"resourceType": "Patient", "name": [{"family": f"F{i}"}]}
        await storage.apply("p1", [UpdateOp("Patient", f"r{i % 3}", resource)], WriteContext())
    await storage.apply("p1", [DeleteOp("Patient", "r0")], WriteContext())


async def test_every_change_is_published_keyed_and_in_order(
    storage: Storage, log: EventLog
) -> None:
    await write(storage, 9)
    relay = OutboxRelay(storage, log)
    assert await relay.drain() == 10
    assert await storage.outbox_pending(10) == []
    records = await read_all(log, 10)
    events = [ChangeEvent.model_validate(orjson.loads(r.value)) for r in records]
    assert {r.key for r in records} == {"p1/Patient/r0", "p1/Patient/r1", "p1/Patient/r2"}
    for key in {r.key for r in records}:
        versions = [int(e.version_id) for r, e in zip(records, events, strict=True) if r.key == key]
        assert versions == sorted(versions)
    assert [e.interaction for e in events].count("delete") == 1


class CrashAfterPublish:
    """Publishes, then dies before the relay can mark the rows."""

    def __init__(self, inner: EventLog) -> None:
        self.inner = inner

    async def publish_many(self, topic: str, messages: Sequence[OutgoingMessage]) -> object:
        await self.inner.publish_many(topic, messages)
        raise ConnectionError("relay process killed")


async def test_crash_between_publish_and_mark_duplicates_never_loses(
    storage: Storage, log: EventLog
) -> None:
    await write(storage, 5)
    with pytest.raises(ConnectionError):
        await OutboxRelay(storage, CrashAfterPublish(log)).run_once()
    assert len(await storage.outbox_pending(100)) == 6, "nothing marked: all will be re-sent"
    await OutboxRelay(storage, log).drain()
    records = await read_all(log, 12)
    ids = [ChangeEvent.model_validate(orjson.loads(r.value)).event_id for r in records]
    assert len(ids) == 12 and len(set(ids)) == 6


async def test_background_relay_wakes_on_notify(storage: Storage, log: EventLog) -> None:
    relay = OutboxRelay(storage, log)
    relay.start()
    try:
        await write(storage, 2)
        relay.notify()
        records = await read_all(log, 3)
        assert len(records) == 3
    finally:
        await relay.stop()
