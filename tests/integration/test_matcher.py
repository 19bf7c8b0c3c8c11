"""The matcher stage on both event-log adapters (embedded and a real Kafka broker), with two
matcher members in one consumer group, each with its own configuration cache (as two worker
processes): a Subscription change takes effect for the very next event whichever member reads
it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.eventlog.port import EventLog
from fhirbots.engine.fhir.integrity import IntegrityPolicy
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.stages.matcher import MatcherStage, MatcherTopics
from fhirbots.engine.stages.relay import OutboxRelay
from fhirbots.engine.storage.model import StoredResource, WriteContext
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.storage.sqlite import SqliteStorage
from fhirbots.schemas.events import CausationLink
from fhirbots.schemas.notifications import Notification
from fhirbots.schemas.subscriptions import SuppressedNotification
from tests.integration.conftest import make_event_log
from tests.waiting import eventually

pytestmark = pytest.mark.integration

CTX = WriteContext(author="ApiKey/test")
WAIT_SECONDS = 60.0
"""Kafka's first group join and rebalance can take a few seconds on a busy machine."""


class World:
    """A datastore, a relay and two matcher members on one adapter."""

    def __init__(self, fhir: FhirService, logs: list[EventLog], topics: MatcherTopics) -> None:
        self.fhir = fhir
        self.logs = logs
        self.topics = topics

    async def read(self, topic: str, model: Any) -> list[Any]:
        log = self.logs[0]
        out: list[Any] = []
        for partition in range(await log.partitions(topic)):
            offset = 0
            while True:
                batch = await log.read(topic, partition, offset=offset, limit=500)
                if not batch:
                    break
                out.extend(model.model_validate_json(r.value) for r in batch)
                offset = batch[-1].offset + 1
        return out

    async def wait(
        self, predicate: Callable[[list[Any]], bool], topic: str, model: Any
    ) -> list[Any]:
        async def holds() -> bool:
            return predicate(await self.read(topic, model))

        await eventually(holds, f"the expected items on {topic}", within=WAIT_SECONDS)
        return await self.read(topic, model)  # a read started after it held

    async def create(self, resource: dict[str, Any], ctx: WriteContext = CTX) -> StoredResource:
        """Create ``resource`` in project p1; returns the stored version."""
        written = await self.fhir.create("p1", resource, ctx)
        assert written.stored is not None
        return written.stored

    async def notes(self, predicate: Callable[[list[Notification]], bool]) -> list[Notification]:
        return await self.wait(predicate, self.topics.notifications, Notification)


@pytest.fixture
async def world(
    adapter: tuple[str, str], tmp_path: Path, unique: Callable[[str], str]
) -> AsyncIterator[World]:
    storage = SqliteStorage(tmp_path / "store.db", indexer=SqlSearchIndexer())
    await storage.open()
    await storage.ensure_project("p1", "Project one")
    topics = MatcherTopics(
        changes=unique("changes"),
        notifications=unique("notifications"),
        suppressed=unique("suppressed"),
    )
    logs = [make_event_log(*adapter) for _ in range(3)]
    for log in logs:
        await log.start()
    relay = OutboxRelay(storage, logs[0], topic=topics.changes)
    # The Observations refer to Patients never stored: matching, not references, is tested.
    fhir = FhirService(storage, on_commit=relay.notify, integrity=IntegrityPolicy(on_write=False))
    from fhirbots.engine.operations.subscriptions import install

    install(fhir, [])
    for spec in topics.specs():
        await logs[0].create_topic(spec.name, spec.partitions, spec.retention)
    group = unique("matcher")
    stages = [MatcherStage(storage, log, topics=topics) for log in logs[1:]]
    handles = [
        await stage.start(log, group=group) for stage, log in zip(stages, logs[1:], strict=True)
    ]
    relay.start()
    for handle in handles:
        await handle.wait_assigned()
    yield World(fhir, logs, topics)
    await relay.stop()
    for stage in stages:
        await stage.stop()
    for log in logs:
        await log.stop()
    await storage.close()


def subscription(criteria: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
        **fields,
    }


def observation(code: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


async def test_two_matchers_immediate_effect(world: World) -> None:
    watcher = await world.create(subscription("Observation"))
    sub = await world.create(subscription("Observation?code=1111-1"))
    # At once, events on many resources (so on many partitions, read by both members).
    first = [await world.create(observation("1111-1", f"a{i}")) for i in range(12)]
    first_ids = {w.id for w in first}
    notes = await world.notes(
        lambda n: first_ids <= {x.resource_id for x in n if x.subscription_id == sub.id}
    )
    assert {n.resource_id for n in notes if n.subscription_id == watcher.id} >= first_ids

    assert sub.content is not None
    changed = {**sub.content, "criteria": "Observation?code=2222-2"}
    await world.fhir.update("p1", "Subscription", sub.id, changed, CTX)
    second = [await world.create(observation("1111-1", f"b{i}")) for i in range(12)]
    second_ids = {w.id for w in second}
    notes = await world.notes(
        lambda n: second_ids <= {x.resource_id for x in n if x.subscription_id == watcher.id}
    )
    assert not second_ids & {n.resource_id for n in notes if n.subscription_id == sub.id}
    # Every notification is unique per (subscription, event).
    assert len({n.notification_id for n in notes}) == len(notes)


async def test_loop_guard_on_the_log(world: World) -> None:
    channel = {"type": "rest-hook", "endpoint": "Bot/b1"}
    sub = await world.create(subscription("Observation", channel=channel))
    links = tuple(CausationLink(bot="Bot/b1", execution=f"e{i}") for i in range(5))
    allowed = await world.create(
        observation("1", "x"), WriteContext(author="Bot/b1", causation=links)
    )
    deep = (*links, CausationLink(bot="Bot/b1", execution="e5"))
    refused = await world.create(
        observation("1", "y"), WriteContext(author="Bot/b1", causation=deep)
    )
    (record,) = await world.wait(
        lambda s: len(s) >= 1, world.topics.suppressed, SuppressedNotification
    )
    assert record.resource_id == refused.id and record.subscription_id == sub.id
    notes = await world.notes(lambda n: len(n) >= 1)
    assert [n.resource_id for n in notes] == [allowed.id]
