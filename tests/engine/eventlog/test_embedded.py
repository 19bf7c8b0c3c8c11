from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings
from fhirbots.engine.eventlog.errors import BrokerError, EventLogClosed, TopicNotFound
from fhirbots.engine.eventlog.port import (
    HEADER_ERROR,
    ConsumerOptions,
    OutgoingMessage,
    Record,
    RetryPolicy,
)
from fhirbots.schemas.topics import deadletter_topic
from tests.waiting import DEADLINE, eventually


class Collector:
    """A handler that records batches and signals when it has seen ``expected`` records."""

    def __init__(self, expected: int) -> None:
        self.records: list[Record] = []
        self.batches = 0
        self.expected = expected
        self.done = asyncio.Event()

    async def __call__(self, batch: list[Record]) -> None:
        self.batches += 1
        self.records.extend(batch)
        if len(self.records) >= self.expected:
            self.done.set()


async def test_consumer_is_woken_by_publish(settings: EmbeddedSettings) -> None:
    # An idle consumer looks again only after an hour, far beyond the test's deadline: the
    # record can only reach it because the publish woke it.
    assert timedelta(hours=1).total_seconds() > DEADLINE
    log = EmbeddedEventLog(replace(settings, poll_interval=timedelta(hours=1)))
    await log.start()
    await log.create_topic("t", 2)
    seen = Collector(1)
    consumer = await log.consume(["t"], "g", seen)
    await consumer.wait_assigned()  # it polled once, found nothing and waits
    await log.publish("t", "k", b"v")
    await eventually(seen.done.wait, "the record published after the consumer went idle")
    await consumer.stop()
    await log.stop()


async def test_batches_keep_key_order_and_commit(log: EmbeddedEventLog) -> None:
    await log.create_topic("t", 4)
    messages = [OutgoingMessage(f"k{i % 7}", str(i).encode()) for i in range(1000)]
    await log.publish_many("t", messages)
    seen = Collector(1000)
    consumer = await log.consume(["t"], "g", seen, options=ConsumerOptions(batch_size=64))
    await eventually(seen.done.wait, "1000 records")
    await consumer.stop()
    assert seen.batches >= 1000 // 64
    per_key: dict[str, list[int]] = {}
    for r in seen.records:
        per_key.setdefault(r.key, []).append(int(r.value))
    for values in per_key.values():
        assert values == sorted(values)
    assert sum(len(v) for v in per_key.values()) == 1000
    assert set((await log.lag("g")).values()) == {0}


async def test_restart_resumes_from_committed_offsets(settings: EmbeddedSettings) -> None:
    first = EmbeddedEventLog(settings)
    await first.start()
    await first.create_topic("t", 1)
    await first.publish_many("t", [OutgoingMessage("k", str(i).encode()) for i in range(10)])
    seen = Collector(10)
    consumer = await first.consume(["t"], "g", seen)
    await eventually(seen.done.wait, "the first 10 records")
    await consumer.stop()
    await first.publish_many("t", [OutgoingMessage("k", str(i).encode()) for i in range(10, 15)])
    await first.stop()

    second = EmbeddedEventLog(settings)
    await second.start()
    assert await second.lag("g") == {("t", 0): 5}
    rest = Collector(5)
    consumer = await second.consume(["t"], "g", rest)
    await eventually(rest.done.wait, "the 5 records after the restart")
    await consumer.stop()
    assert [int(r.value) for r in rest.records] == list(range(10, 15))
    await second.stop()


async def test_failing_handler_gets_the_same_batch_again(log: EmbeddedEventLog) -> None:
    await log.create_topic("t", 1)
    await log.publish_many("t", [OutgoingMessage("k", str(i).encode()) for i in range(5)])
    calls: list[list[int]] = []
    done = asyncio.Event()

    async def flaky(batch: list[Record]) -> None:
        calls.append([r.offset for r in batch])
        if len(calls) < 3:
            raise RuntimeError("database down")
        done.set()

    retry = RetryPolicy(initial_backoff=timedelta(milliseconds=10))
    consumer = await log.consume(["t"], "g", flaky, options=ConsumerOptions(retry=retry))
    await eventually(done.wait, "the third attempt")
    await consumer.stop()
    assert calls == [[0, 1, 2, 3, 4]] * 3
    assert await log.lag("g") == {("t", 0): 0}


async def test_retry_ceiling_sends_batch_to_dead_letter(log: EmbeddedEventLog) -> None:
    await log.create_topic("t", 1)
    await log.publish("t", "k", b"v")
    attempts = 0

    async def broken(batch: list[Record]) -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("always")

    retry = RetryPolicy(initial_backoff=timedelta(milliseconds=1), max_attempts=2)
    consumer = await log.consume(["t"], "g", broken, options=ConsumerOptions(retry=retry))

    async def committed() -> bool:
        return await log.lag("g") == {("t", 0): 0}

    await eventually(committed, "the dead-lettered batch committed")
    await consumer.stop()
    assert attempts == 2
    (dead,) = await log.read(deadletter_topic("t"), 0, offset=0)
    assert dead.value == b"v"
    assert dead.header(HEADER_ERROR) == b"always"


async def test_stop_during_retry_does_not_commit(log: EmbeddedEventLog) -> None:
    await log.create_topic("t", 1)
    await log.publish("t", "k", b"v")
    failed = asyncio.Event()

    async def broken(batch: list[Record]) -> None:
        failed.set()
        raise RuntimeError("down")

    # A back-off far beyond the test's deadline: stop returns only if it cuts the back-off.
    hour = timedelta(hours=1)
    assert hour.total_seconds() > DEADLINE
    retry = RetryPolicy(initial_backoff=hour, max_backoff=hour)
    consumer = await log.consume(["t"], "g", broken, options=ConsumerOptions(retry=retry))
    await eventually(failed.wait, "the first failure")
    stopping = asyncio.create_task(consumer.stop())
    await eventually(stopping.done, "stop() to return during the back-off")
    await stopping
    assert await log.lag("g") == {}  # nothing committed, no members left
    again = Collector(1)
    consumer = await log.consume(["t"], "g", again)
    await eventually(again.done.wait, "the record again, for a new member")
    await consumer.stop()
    assert [r.value for r in again.records] == [b"v"]


async def test_two_members_split_partitions_and_rebalance_on_leave(
    log: EmbeddedEventLog,
) -> None:
    await log.create_topic("t", 4)
    a = await log.consume(["t"], "g", Collector(0))
    b = await log.consume(["t"], "g", Collector(0))
    await eventually(lambda: a.assignment() and b.assignment(), "partitions for both members")
    assert a.assignment() | b.assignment() == {("t", p) for p in range(4)}
    assert not a.assignment() & b.assignment()
    await b.stop()
    await eventually(lambda: len(a.assignment()) == 4, "every partition for the one left")
    await a.stop()


async def test_start_from_latest_skips_history(log: EmbeddedEventLog) -> None:
    await log.create_topic("t", 1)
    await log.publish("t", "k", b"old")
    seen = Collector(1)
    consumer = await log.consume(["t"], "g", seen, options=ConsumerOptions(start_from="latest"))
    await consumer.wait_assigned()
    await log.publish("t", "k", b"new")
    await eventually(seen.done.wait, "the new record")
    await consumer.stop()
    assert [r.value for r in seen.records] == [b"new"]


async def test_reset_offsets_by_offset_and_time(log: EmbeddedEventLog) -> None:
    await log.create_topic("t", 1)
    _, b = await log.publish_many("t", [OutgoingMessage("k", b"a"), OutgoingMessage("k", b"b")])

    def after_b() -> datetime | None:
        # The log stamps records in milliseconds: "middle" must fall in a later one than b.
        now = datetime.now(UTC)
        return now if now - b.timestamp >= timedelta(milliseconds=1) else None

    middle = await eventually(after_b, "the clock to pass b's millisecond")
    await log.publish("t", "k", b"c")
    assert await log.reset_offsets("g", "t", offset=1) == {0: 1}
    assert await log.lag("g") == {("t", 0): 2}
    assert await log.reset_offsets("g", "t", since=middle) == {0: 2}
    assert await log.reset_offsets("g", "t", offset=99) == {0: 3}
    seen = Collector(1)
    await log.reset_offsets("g", "t", offset=2)
    consumer = await log.consume(["t"], "g", seen)
    await eventually(seen.done.wait, "the record after the reset offset")
    await consumer.stop()
    assert [r.value for r in seen.records] == [b"c"]


async def test_read_without_group(log: EmbeddedEventLog) -> None:
    await log.create_topic("t", 1)
    await log.publish_many("t", [OutgoingMessage("k", bytes([i])) for i in range(5)])
    assert [r.offset for r in await log.read("t", 0, offset=2)] == [2, 3, 4]
    assert [r.offset for r in await log.read("t", 0, offset=0, limit=2)] == [0, 1]
    assert await log.end_offsets("t") == {0: 5}
    assert await log.partitions("t") == 1


async def test_topics_from_settings_and_errors(settings: EmbeddedSettings) -> None:
    from fhirbots.engine.eventlog.port import TopicSpec

    log = EmbeddedEventLog(replace(settings, topics=(TopicSpec("fhir.x.v1", 3),)))
    with pytest.raises(EventLogClosed):
        await log.publish("fhir.x.v1", "k", b"v")
    await log.start()
    assert await log.partitions("fhir.x.v1") == 3
    assert await log.partitions(deadletter_topic("fhir.x.v1")) == 3
    with pytest.raises(TopicNotFound):
        await log.publish("missing", "k", b"v")
    with pytest.raises(TopicNotFound):
        await log.consume(["missing"], "g", Collector(0))
    await log.stop()


async def test_two_processes_share_the_file_by_polling(settings: EmbeddedSettings) -> None:
    fast = replace(settings, poll_interval=timedelta(milliseconds=20))
    writer, reader = EmbeddedEventLog(fast), EmbeddedEventLog(fast)
    await writer.start()
    await reader.start()
    await writer.create_topic("t", 2)
    seen = Collector(50)
    consumer = await reader.consume(["t"], "g", seen)
    await writer.publish_many("t", [OutgoingMessage(f"k{i}", b"v") for i in range(50)])
    await eventually(seen.done.wait, "50 records published by the other log")
    await consumer.stop()
    await writer.stop()
    await reader.stop()
    assert len(seen.records) == 50


async def test_consumer_survives_storage_errors(
    log: EmbeddedEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fhirbots.engine.eventlog.embedded as embedded_module
    from fhirbots.engine.eventlog.errors import BrokerError

    monkeypatch.setattr(embedded_module, "TRANSIENT_RETRY_SECONDS", 0.01)
    await log.create_topic("t", 1)
    real_commit = log.store.commit
    failures = 0

    def flaky_commit(
        group: str, generation: int | None, offsets: dict[tuple[str, int], int]
    ) -> bool:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise BrokerError("database is locked")
        return real_commit(group, generation, offsets)

    monkeypatch.setattr(log.store, "commit", flaky_commit)
    seen = Collector(3)
    consumer = await log.consume(["t"], "g", seen)
    await log.publish_many("t", [OutgoingMessage("k", b"%d" % i) for i in range(3)])

    async def committed() -> bool:
        return await log.lag("g") == {("t", 0): 0}

    await eventually(committed, "the batch committed after two failed commits")
    await consumer.stop()
    assert failures == 2
    assert await log.lag("g") == {("t", 0): 0}
    # The uncommitted batch was handled again after each failed commit (at-least-once).
    assert [r.value for r in seen.records] == [b"0", b"1", b"2"] * 3


async def test_dead_letter_topic_is_created_when_missing(log: EmbeddedEventLog) -> None:
    from fhirbots.engine.eventlog.processing import dead_letter_sink

    sink = dead_letter_sink(log)
    await sink("made.elsewhere.deadletter", [OutgoingMessage("k", b"v")])
    assert await log.partitions("made.elsewhere.deadletter") == 1
    assert [r.value for r in await log.read("made.elsewhere.deadletter", 0)] == [b"v"]


async def test_retention_runs_in_the_background(settings: EmbeddedSettings) -> None:
    from fhirbots.engine.eventlog.port import Retention

    log = EmbeddedEventLog(replace(settings, retention_interval=timedelta(milliseconds=20)))
    await log.start()
    await log.create_topic("t", 1, Retention(age=timedelta(milliseconds=1)))
    await log.publish_many("t", [OutgoingMessage("k", b"v") for _ in range(3)])

    async def trimmed() -> bool:
        return await log.read("t", 0, offset=0) == []

    await eventually(trimmed, "retention to delete the aged records")
    assert await log.end_offsets("t") == {0: 3}  # offsets are never reused
    await log.stop()


async def test_a_failed_read_is_a_broker_error(
    log: EmbeddedEventLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    await log.create_topic("t", 1)

    def locked(*_args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(log.browser, "fetch", locked)
    with pytest.raises(BrokerError, match="database is locked") as failed:
        await log.read("t", 0, offset=0)
    assert isinstance(failed.value.__cause__, sqlite3.OperationalError)
