"""The statistics stage: windows, trace steps, execution records, lag, retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings
from fhirbots.engine.eventlog.port import ConsumerOptions, Record
from fhirbots.engine.observatory.store_sqlite import SqliteObservatoryStore
from fhirbots.engine.stages.stats import STATS_GROUP, StatsStage, decode
from fhirbots.schemas.deliveries import DeliveryAttemptRecord
from fhirbots.schemas.events import CausationLink, ChangeEvent
from fhirbots.schemas.executions import BotExecutionRecord
from fhirbots.schemas.notifications import ChannelSpec, Notification
from fhirbots.schemas.topics import BOT_EXECUTIONS, CHANGES, DELIVERIES, NOTIFICATIONS
from tests.waiting import eventually

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def change(event_id: str, *, causation: tuple[CausationLink, ...] = ()) -> ChangeEvent:
    return ChangeEvent(
        event_id=event_id,
        project="p1",
        interaction="create",
        resource_type="Observation",
        resource_id=event_id,
        version_id="1",
        resource={"resourceType": "Observation"},
        time=T0,
        traceparent=TRACEPARENT,
        causation=causation,
    )


def notification(notification_id: str, event_id: str) -> Notification:
    return Notification(
        notification_id=notification_id,
        project="p1",
        subscription_id="sub1",
        subscription_version="1",
        event_id=event_id,
        interaction="create",
        resource_type="Observation",
        resource_id=event_id,
        version_id="1",
        channel=ChannelSpec(type="rest-hook", endpoint="https://example.org/hook"),
        time=T0,
        traceparent=TRACEPARENT,
    )


def attempt(notification_id: str, outcome: str, ms: float) -> DeliveryAttemptRecord:
    return DeliveryAttemptRecord.model_validate(
        {
            "attempt_id": uuid.uuid4().hex,
            "project": "p1",
            "subscription_id": "sub1",
            "notification_id": notification_id,
            "event_id": "e1",
            "event_number": 1,
            "channel": "rest-hook",
            "endpoint": "https://example.org/hook",
            "attempt": 1,
            "outcome": outcome,
            "status": 500 if outcome != "success" else 200,
            "started": T0,
            "duration_ms": ms,
            "trace_id": TRACE,
        }
    )


def execution(execution_id: str, status: str, recording: str = "all") -> BotExecutionRecord:
    return BotExecutionRecord.model_validate(
        {
            "execution_id": execution_id,
            "project": "p1",
            "bot": "Bot/b1",
            "trigger": "subscription",
            "status": status,
            "started": T0,
            "duration_ms": 12.0,
            "trace_id": TRACEPARENT,
            "notification_id": "n1",
            "input": {"resourceType": "Observation"},
            "recording": recording,
        }
    )


def record(topic: str, payload: Any, offset: int) -> Record:
    return Record(topic, 0, offset, payload.key, payload.model_dump_json().encode(), (), T0)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteObservatoryStore]:
    opened = SqliteObservatoryStore(tmp_path / "observatory.db")
    await opened.open()
    yield opened
    await opened.close()


def the_chain() -> list[Record]:
    link = (CausationLink(bot="Bot/b1", execution="x1"),)
    return [
        record(CHANGES, change("e1"), 0),
        record(NOTIFICATIONS, notification("n1", "e1"), 0),
        record(DELIVERIES, attempt("n1", "retry", 40.0), 0),
        record(DELIVERIES, attempt("n1", "success", 8.0), 1),
        record(BOT_EXECUTIONS, execution("x1", "success"), 0),
        record(CHANGES, change("e2", causation=link), 1),
    ]


async def test_a_chain_becomes_one_trace_tree(store: SqliteObservatoryStore) -> None:
    stage = StatsStage(store, retention=timedelta(days=7))
    await stage.handle(the_chain())

    steps = await store.trace("p1", TRACE)
    parents = {(s.kind, s.ref): s.parent for s in steps}
    assert parents[("change", "e1")] is None
    assert parents[("notification", "n1")] == "e1"
    assert parents[("execution", "x1")] == "n1"
    assert parents[("change", "e2")] == "x1"
    assert sum(1 for s in steps if s.kind == "delivery") == 2
    assert all(s.parent == "n1" for s in steps if s.kind == "delivery")
    assert await store.trace_of("p1", "e2") == TRACE
    assert await store.trace("p2", TRACE) == []
    kept = await store.execution("p1", "x1")
    assert kept is not None and kept.input == {"resourceType": "Observation"}


async def test_windows_are_written_when_they_close(store: SqliteObservatoryStore) -> None:
    stage = StatsStage(store, retention=timedelta(days=7))
    await stage.handle(the_chain())
    until = T0 + timedelta(minutes=1)
    assert await store.series("p1", "changes", T0, until, until - T0) == []

    await stage.tick(None, now=T0 + timedelta(minutes=1))

    changes = await store.series("p1", "changes", T0, until, until - T0)
    assert [(p.dims, p.count) for p in changes] == [(("Observation", "create"), 2)]
    deliveries = await store.series("p1", "deliveries", T0, until, until - T0)
    assert {p.dims: p.count for p in deliveries} == {("sub1", "retry"): 1, ("sub1", "success"): 1}
    executions = await store.series("p1", "executions", T0, until, until - T0)
    assert executions[0].count == 1 and executions[0].p50_ms is not None
    assert executions[0].p50_ms >= 12.0


@pytest.mark.parametrize(
    ("recording", "status", "kept"),
    [
        ("all", "success", True),
        ("errors", "success", False),
        ("errors", "timeout", True),
        ("none", "error", False),
    ],
)
async def test_execution_recording_decides_what_is_kept(
    store: SqliteObservatoryStore, recording: str, status: str, kept: bool
) -> None:
    stage = StatsStage(store, retention=timedelta(days=7))
    await stage.handle([record(BOT_EXECUTIONS, execution("x9", status, recording), 0)])
    await stage.tick(None, now=T0 + timedelta(minutes=1))
    assert (await store.execution("p1", "x9") is not None) is kept
    until = T0 + timedelta(minutes=1)
    counted = await store.series("p1", "executions", T0, until, until - T0)
    assert [p.count for p in counted] == [1]  # always counted


async def test_stopping_flushes_open_windows(store: SqliteObservatoryStore) -> None:
    stage = StatsStage(store, retention=timedelta(days=7))
    now = datetime.now(UTC)
    fresh = change("e1").model_copy(update={"time": now})
    await stage.handle([record(CHANGES, fresh, 0)])
    await stage.stop()
    points = await store.series(
        "p1",
        "changes",
        now - timedelta(minutes=1),
        now + timedelta(minutes=1),
        timedelta(minutes=2),
    )
    assert [p.count for p in points] == [1]


async def test_a_malformed_record_is_refused_by_decode() -> None:
    bad = Record(CHANGES, 0, 0, "k", b'{"not": "an event"}', (), T0)
    with pytest.raises(ValueError, match="validation error"):
        decode(bad)
    with pytest.raises(ValueError, match="does not read"):
        decode(Record("other.v1", 0, 0, "k", b"{}", (), T0))


async def test_consumes_the_topics_samples_lag_and_purges(
    store: SqliteObservatoryStore, tmp_path: Path
) -> None:
    log = EmbeddedEventLog(
        EmbeddedSettings(
            path=tmp_path / "log.db", synchronous="NORMAL", poll_interval=timedelta(milliseconds=50)
        )
    )
    await log.start()
    stage = StatsStage(store, retention=timedelta(days=7), lag_groups=["lagging", STATS_GROUP])
    try:
        await stage.start(log, options=ConsumerOptions(max_wait=timedelta(0)))
        for r in the_chain():
            await log.publish(r.topic, r.key, r.value)
        # Another group that has never read: everything published is its lag.
        await log.consume([CHANGES], "lagging", _never_done, options=ConsumerOptions())
        await wait_until_trace_has(store, 6)
        await stage.tick(log, now=datetime.now(UTC))
        samples = {s.group: s for s in await store.lag(T0)}
        assert samples[STATS_GROUP].events == 0
        lagging = samples["lagging"]
        assert lagging.events == 2 and lagging.seconds > 0
        # A day later, with a retention of a second, everything is past it.
        stage.retention = timedelta(seconds=1)
        await stage.tick(None, now=datetime.now(UTC) + timedelta(days=1))
        assert await store.trace("p1", TRACE) == []
    finally:
        await stage.stop()
        await log.stop()


async def _never_done(records: list[Record]) -> None:
    raise RuntimeError("this consumer never commits")


async def wait_until_trace_has(store: SqliteObservatoryStore, steps: int) -> None:
    async def enough() -> bool:
        return len(await store.trace("p1", TRACE)) >= steps

    await eventually(enough, f"{steps} steps of the trace in the store")
