"""The matcher stage on the embedded log: immediate effect, errors, loop guard, poison."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.eventlog.port import EventLog
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import StoredResource, WriteContext
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.events import CausationLink
from fhirbots.schemas.notifications import Notification
from fhirbots.schemas.subscriptions import SuppressedNotification
from fhirbots.schemas.topics import CHANGES, NOTIFICATIONS, SUPPRESSED, deadletter_topic
from fhirbots.subscriptions.model import CRITERIA_ERROR_URL
from tests.waiting import eventually

FHIRPATH_URL = "https://medplum.com/fhir/StructureDefinition/fhir-path-criteria-expression"
CTX = WriteContext(author="ApiKey/test")


async def read_all(log: EventLog, topic: str) -> list[bytes]:
    values: list[bytes] = []
    for partition in range(await log.partitions(topic)):
        offset = 0
        while True:
            batch = await log.read(topic, partition, offset=offset, limit=500)
            if not batch:
                break
            values.extend(r.value for r in batch)
            offset = batch[-1].offset + 1
    return values


async def notifications(log: EventLog) -> list[Notification]:
    return [Notification.model_validate_json(v) for v in await read_all(log, NOTIFICATIONS)]


async def wait_for(
    log: EventLog, predicate: Callable[[list[Any]], bool], topic: str = NOTIFICATIONS
) -> list[Any]:
    """Wait until ``predicate(items)`` holds for the topic's decoded items; return them.

    The items returned come from a read started after the predicate held: a batch's messages
    land on several partitions, which one read visits one after the other, so the read that
    saw part of a batch may have missed the rest.
    """
    model: Any = Notification if topic == NOTIFICATIONS else SuppressedNotification

    async def decoded() -> list[Any]:
        return [model.model_validate_json(v) for v in await read_all(log, topic)]

    async def holds() -> bool:
        return predicate(await decoded())

    await eventually(holds, f"the expected items on {topic}")
    return await decoded()


@pytest.fixture
async def engine(storage: Storage, tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine with relay and matcher running on the embedded log."""
    # The Observations written refer to a Patient/p1 never stored: the change events, not the
    # references, are what these tests are about.
    settings = Settings(data_dir=tmp_path, referential_integrity_on_write=False)
    running = Engine(settings, storage=storage)
    await storage.ensure_project("p1", "Project one")
    await running.start_relay()
    await running.start_matcher()
    yield running
    await running.close()


def subscription(criteria: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
        **fields,
    }


def observation(code: str = "8867-4", status: str = "final") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": "Patient/p1"},
    }


async def create(
    engine: Engine, resource: dict[str, Any], ctx: WriteContext = CTX
) -> StoredResource:
    """Create ``resource`` in project p1; returns the stored version."""
    written = await engine.fhir.create("p1", resource, ctx)
    assert written.stored is not None
    return written.stored


async def test_created_subscription_fires_for_the_very_next_write(engine: Engine) -> None:
    log = engine.event_log
    assert log is not None
    sub = await create(engine, subscription("Observation?code=8867-4"))
    written = await create(engine, observation())  # at once, no waiting
    items = await wait_for(log, lambda n: len(n) >= 1)
    (note,) = items
    assert note.subscription_id == sub.id
    assert note.resource_id == written.id
    assert note.resource is not None and note.resource["status"] == "final"


async def test_changed_and_deleted_subscriptions_take_effect_at_once(engine: Engine) -> None:
    log = engine.event_log
    assert log is not None
    watcher = await create(engine, subscription("Observation"))
    sub = await create(engine, subscription("Observation?code=1111-1"))
    assert sub.content is not None
    changed = {**sub.content, "criteria": "Observation?code=2222-2"}
    await engine.fhir.update("p1", "Subscription", sub.id, changed, CTX)
    second = await create(engine, observation("2222-2"))
    first = await create(engine, observation("1111-1"))
    items = await wait_for(
        log,
        lambda n: (
            {x.resource_id for x in n if x.subscription_id == watcher.id} >= {first.id, second.id}
        ),
    )
    mine = {n.resource_id for n in items if n.subscription_id == sub.id}
    assert mine == {second.id}
    await engine.fhir.delete("p1", "Subscription", sub.id, CTX)
    third = await create(engine, observation("2222-2"))
    items = await wait_for(log, lambda n: any(x.resource_id == third.id for x in n))
    assert not any(n.subscription_id == sub.id and n.resource_id == third.id for n in items)


async def test_runtime_failure_marks_the_subscription_and_spares_others(engine: Engine) -> None:
    log = engine.event_log
    assert log is not None
    broken = subscription(
        "Observation",
        extension=[
            {"url": FHIRPATH_URL, "valueString": "iif(status = 'final', status.foo(), false)"}
        ],
    )
    bad = await create(engine, broken)
    good = await create(engine, subscription("Observation"))
    await engine.fhir.create("p1", observation(), CTX)
    items = await wait_for(log, lambda n: len(n) >= 1)
    assert {n.subscription_id for n in items} == {good.id}

    async def errored() -> StoredResource | None:
        stored = await engine.fhir.read("p1", "Subscription", bad.id)
        assert stored.content is not None
        return stored if stored.content["status"] == "error" else None

    stored = await eventually(errored, "the broken subscription marked as errored")
    assert stored.content is not None
    assert "foo" in stored.content["error"]
    assert {"url": CRITERIA_ERROR_URL, "valueBoolean": True} in stored.content["extension"]
    # a subscription whose criteria failed stays quiet: the next event notifies only the
    # good one, and the broken one is not marked again
    after = await create(engine, observation())
    items = await wait_for(log, lambda n: any(x.resource_id == after.id for x in n))
    assert {n.subscription_id for n in items} == {good.id}
    again = await engine.fhir.read("p1", "Subscription", bad.id)
    assert again.version_id == stored.version_id


async def test_delivery_errors_keep_a_subscription_firing(engine: Engine) -> None:
    log = engine.event_log
    assert log is not None
    failing = await create(engine, subscription("Observation", status="error"))
    written = await create(engine, observation())
    items = await wait_for(log, lambda n: any(x.resource_id == written.id for x in n))
    assert {n.subscription_id for n in items} == {failing.id}


async def test_loop_guard_publishes_suppressed_records(engine: Engine) -> None:
    log = engine.event_log
    assert log is not None
    channel = {"type": "rest-hook", "endpoint": "Bot/b1"}
    bot_sub = await create(engine, subscription("Observation", channel=channel))
    chain = tuple(CausationLink(bot="Bot/b1", execution=f"e{i}") for i in range(6))
    written = await create(engine, observation(), WriteContext(author="Bot/b1", causation=chain))
    (record,) = await wait_for(log, lambda s: len(s) >= 1, topic=SUPPRESSED)
    assert record.subscription_id == bot_sub.id
    assert record.resource_id == written.id
    assert record.occurrences == 6 and len(record.causation) == 6
    assert await notifications(log) == []


async def test_poison_change_is_dead_lettered_and_the_stage_goes_on(engine: Engine) -> None:
    log = engine.event_log
    assert log is not None
    await engine.fhir.create("p1", subscription("Observation"), CTX)
    await log.publish(CHANGES, "p1/Observation/x", b"not json")
    await engine.fhir.create("p1", observation(), CTX)
    await wait_for(log, lambda n: len(n) >= 1)
    assert b"not json" in await read_all(log, deadletter_topic(CHANGES))


async def test_configuration_is_read_once_per_generation(engine: Engine) -> None:
    log = engine.event_log
    assert log is not None and engine.matcher is not None
    await engine.fhir.create("p1", subscription("Observation"), CTX)
    for _ in range(3):
        await engine.fhir.create("p1", observation(), CTX)
    await wait_for(log, lambda n: len(n) >= 3)
    config = await engine.matcher.config_for("p1", 0)
    again = await engine.matcher.config_for("p1", config.generation)
    assert again is config
    newer = await engine.matcher.config_for("p1", config.generation + 1)
    assert newer is not config and newer.generation == config.generation + 1
