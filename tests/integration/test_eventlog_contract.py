"""The event-log contract, run against both adapters (embedded SQLite and real Kafka)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.eventlog.port import (
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_SOURCE_OFFSET,
    ConsumerHandle,
    ConsumerOptions,
    EventLog,
    OutgoingMessage,
    Record,
    Retention,
    TopicSpec,
)
from fhirbots.schemas.topics import deadletter_topic
from tests.conftest import child_env
from tests.integration.conftest import make_event_log
from tests.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

Position = tuple[str, int, int]


class Collector:
    """Handler that keeps every record and signals once it holds ``expected`` positions."""

    def __init__(self, expected: int) -> None:
        self.records: list[Record] = []
        self.expected = expected
        self.done = asyncio.Event()

    async def __call__(self, batch: list[Record]) -> None:
        self.records.extend(batch)
        if len(self.positions()) >= self.expected:
            self.done.set()

    def positions(self) -> set[Position]:
        return {(r.topic, r.partition, r.offset) for r in self.records}


async def test_order_per_key(event_log: EventLog, unique: Callable[[str], str]) -> None:
    topic, group = unique("orders"), unique("g")
    await event_log.create_topic(topic, partitions=4)
    published: list[Record] = []
    for start in range(0, 1000, 250):
        chunk = [
            OutgoingMessage(f"default/Patient/{i % 40}", json.dumps({"n": i}).encode())
            for i in range(start, start + 250)
        ]
        published += await event_log.publish_many(topic, chunk)
    published.append(await event_log.publish(topic, "default/Patient/0", b'{"n": 1000}'))
    seen = Collector(1001)
    consumer = await event_log.consume([topic], group, seen, options=ConsumerOptions(100))
    await eventually(seen.done.wait, "all 1001 records")
    await consumer.stop()

    for r in published:
        assert r.partition == partition_for(r.key, 4)  # same partitioner in both adapters
    per_key: dict[str, list[int]] = {}
    for r in seen.records:
        assert r.partition == partition_for(r.key, 4)
        per_key.setdefault(r.key, []).append(json.loads(r.value)["n"])
    assert len(per_key) == 40
    for key, numbers in per_key.items():
        assert numbers == sorted(numbers), key
    assert sorted(n for ns in per_key.values() for n in ns) == list(range(1001))
    assert set((await event_log.lag(group)).values()) == {0}


KILLABLE_CONSUMER = """
import asyncio, os, sys
from datetime import timedelta
from pathlib import Path
from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings
from fhirbots.engine.eventlog.kafka import KafkaEventLog, KafkaSettings
from fhirbots.engine.eventlog.port import ConsumerOptions

kind, location, topic, group, out, session = sys.argv[1:7]
session_timeout = timedelta(seconds=float(session))

async def main():
    if kind == "kafka":
        log = KafkaEventLog(KafkaSettings(location, session_timeout=session_timeout,
                                          heartbeat_interval=timedelta(seconds=1)))
    else:
        log = EmbeddedEventLog(EmbeddedSettings(Path(location), session_timeout=session_timeout,
                                                heartbeat_interval=timedelta(milliseconds=200),
                                                poll_interval=timedelta(milliseconds=50)))
    await log.start()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    handled = 0
    async def handler(batch):
        nonlocal handled
        lines = "".join(f"{r.topic} {r.partition} {r.offset}\\n" for r in batch)
        os.write(fd, lines.encode())
        os.fsync(fd)
        handled += len(batch)
        if handled >= 100:  # keep this batch in hand, uncommitted, until the kill
            await asyncio.Event().wait()
    await log.consume([topic], group, handler, options=ConsumerOptions(batch_size=20))
    await asyncio.Event().wait()

asyncio.run(main())
"""


def read_positions(path: Path) -> list[Position]:
    if not path.exists():
        return []
    result = []
    for line in path.read_text().splitlines():
        topic, partition, offset = line.split()
        result.append((topic, int(partition), int(offset)))
    return result


async def test_nothing_lost_when_consumer_is_killed_mid_batch(
    event_log: EventLog, adapter: tuple[str, str], unique: Callable[[str], str], tmp_path: Path
) -> None:
    kind, location = adapter
    topic, group = unique("kill"), unique("g")
    await event_log.create_topic(topic, partitions=2)
    published = await event_log.publish_many(
        topic, [OutgoingMessage(f"k{i % 9}", str(i).encode()) for i in range(400)]
    )
    script = tmp_path / "killable_consumer.py"
    script.write_text(KILLABLE_CONSUMER)
    out = tmp_path / "seen.txt"
    session = "6" if kind == "kafka" else "2"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        kind,
        location,
        topic,
        group,
        str(out),
        session,
        cwd=REPO,
        env=child_env(),
    )
    try:
        await eventually(lambda: len(read_positions(out)) >= 100, "the child's first 100 records")
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    before_kill = read_positions(out)
    assert len(before_kill) < 400, "the child finished before it was killed"

    committed_before = await event_log.lag(group)
    restarted = Collector(400 - len(set(before_kill)))
    consumer = await event_log.consume([topic], group, restarted, options=ConsumerOptions(50))
    expected = {(topic, r.partition, r.offset) for r in published}
    await eventually(
        lambda: set(before_kill) | restarted.positions() >= expected, "all handled again"
    )
    await consumer.stop()

    assert set(before_kill) | restarted.positions() == expected  # nothing lost
    # Work committed before the kill is not redone; only uncommitted batches come back.
    assert sum(committed_before.values()) < 400
    redone = set(before_kill) & restarted.positions()
    assert len(redone) <= 2 * 20, f"{len(redone)} records redone, more than the batches in hand"


async def test_rebalance_between_two_consumers(
    event_log: EventLog, unique: Callable[[str], str]
) -> None:
    topic, group = unique("rebalance"), unique("g")
    await event_log.create_topic(topic, partitions=4)
    first, second = Collector(0), Collector(0)
    a = await event_log.consume([topic], group, first, options=ConsumerOptions(25))
    await a.wait_assigned()
    assert len(a.assignment()) == 4

    published = await event_log.publish_many(
        topic, [OutgoingMessage(f"k{i}", b"1") for i in range(200)]
    )
    b = await event_log.consume([topic], group, second, options=ConsumerOptions(25))

    def split() -> bool:
        return len(a.assignment()) == 2 and len(b.assignment()) == 2

    await eventually(split, "partitions split between two members")
    assert not a.assignment() & b.assignment()
    assert a.assignment() | b.assignment() == {(topic, p) for p in range(4)}

    published += await event_log.publish_many(
        topic, [OutgoingMessage(f"k{i}", b"2") for i in range(200)]
    )
    expected = {(topic, r.partition, r.offset) for r in published}
    await eventually(lambda: first.positions() | second.positions() >= expected, "all 400 handled")
    assert second.positions(), "the second member handled nothing"
    later_partitions = {r.partition for r in second.records}
    assert {(topic, p) for p in later_partitions} <= b.assignment()

    await a.stop()
    await eventually(lambda: len(b.assignment()) == 4, "survivor owns every partition")
    await b.stop()
    assert set((await event_log.lag(group)).values()) == {0}


async def test_replay_from_offset_and_time(
    event_log: EventLog, unique: Callable[[str], str]
) -> None:
    topic, group = unique("replay"), unique("g")
    await event_log.create_topic(topic, partitions=1)
    first = await event_log.publish_many(
        topic, [OutgoingMessage("k", b"%d" % i) for i in range(10)]
    )
    latest = max(r.timestamp for r in first)

    def after_first() -> datetime | None:
        # Both logs stamp records in milliseconds: "middle" must fall in a later one.
        now = datetime.now(UTC)
        return now if now - latest >= timedelta(milliseconds=1) else None

    middle = await eventually(after_first, "the clock to pass the first records' millisecond")
    await event_log.publish_many(topic, [OutgoingMessage("k", b"%d" % i) for i in range(10, 15)])

    async def consume_all(expected: int) -> list[int]:
        seen = Collector(expected)
        consumer: ConsumerHandle = await event_log.consume([topic], group, seen)
        await eventually(seen.done.wait, f"{expected} records")
        await consumer.stop()
        return [int(r.value) for r in seen.records]

    assert await consume_all(15) == list(range(15))
    assert await event_log.lag(group) == {(topic, 0): 0}

    assert await event_log.reset_offsets(group, topic, offset=4) == {0: 4}
    assert await event_log.lag(group) == {(topic, 0): 11}
    assert await consume_all(11) == list(range(4, 15))

    assert await event_log.reset_offsets(group, topic, since=middle) == {0: 10}
    assert await consume_all(5) == list(range(10, 15))

    records = await event_log.read(topic, 0, offset=12)
    assert [r.offset for r in records] == [12, 13, 14]
    assert [int(r.value) for r in await event_log.read(topic, 0, since=middle, limit=2)] == [
        10,
        11,
    ]
    assert await event_log.end_offsets(topic) == {0: 15}


async def test_poison_message_goes_to_dead_letter_topic(
    event_log: EventLog, unique: Callable[[str], str]
) -> None:
    topic, group = unique("poison"), unique("g")
    await event_log.create_topic(topic, partitions=1)
    await event_log.publish_many(
        topic,
        [
            OutgoingMessage("k", b'{"n": 1}'),
            OutgoingMessage("k", b"{not json", (("traceparent", b"00-1-2-01"),)),
            OutgoingMessage("k", b'{"n": 2}'),
        ],
    )
    seen = Collector(2)
    consumer = await event_log.consume([topic], group, seen, validate=lambda r: json.loads(r.value))
    await eventually(seen.done.wait, "the two valid records")
    await event_log.publish(topic, "k", b'{"n": 3}')
    await eventually(lambda: len(seen.records) == 3, "the consumer to go on after the poison")
    await consumer.stop()

    assert [json.loads(r.value)["n"] for r in seen.records] == [1, 2, 3]
    (dead,) = await event_log.read(deadletter_topic(topic), 0, offset=0)
    assert dead.value == b"{not json"
    assert dead.key == "k"
    assert dead.header("traceparent") == b"00-1-2-01"
    assert dead.header(HEADER_ERROR_TYPE) == b"JSONDecodeError"
    assert b"Expecting property name" in (dead.header(HEADER_ERROR) or b"")
    assert dead.header(HEADER_SOURCE_OFFSET) == b"1"
    assert await event_log.lag(group) == {(topic, 0): 0}


async def test_lag_per_partition_before_and_after_commit(
    event_log: EventLog, unique: Callable[[str], str]
) -> None:
    topic, group = unique("lag"), unique("g")
    await event_log.create_topic(topic, partitions=2)
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(batch: list[Record]) -> None:
        entered.set()
        await release.wait()

    consumer = await event_log.consume([topic], group, slow)
    await consumer.wait_assigned()
    records = await event_log.publish_many(
        topic, [OutgoingMessage(f"k{i}", b"x") for i in range(7)]
    )
    await eventually(entered.wait, "the handler to hold a batch")
    per_partition = {(topic, p): 0 for p in range(2)}
    for r in records:
        per_partition[(topic, r.partition)] += 1
    assert await event_log.lag(group) == per_partition  # assigned, nothing committed yet
    release.set()

    async def caught_up() -> bool:
        return sum((await event_log.lag(group)).values()) == 0

    await eventually(caught_up, "the group's lag to reach zero")
    await consumer.stop()
    assert await event_log.lag(group) == {(topic, 0): 0, (topic, 1): 0}


async def test_start_creates_configured_topics(
    adapter: tuple[str, str], unique: Callable[[str], str]
) -> None:
    topic = unique("configured")
    spec = TopicSpec(topic, partitions=3, retention=Retention(bytes_per_partition=1 << 20))
    log = make_event_log(*adapter, topics=(spec,))
    await log.start()
    try:
        assert await log.partitions(topic) == 3
        assert await log.partitions(deadletter_topic(topic)) == 3
        record = await log.publish(topic, "default/Patient/1", b"{}")
        assert record.partition == partition_for("default/Patient/1", 3)
        assert await log.end_offsets(topic) == {0: 0, 1: 0, 2: 0} | {record.partition: 1}
    finally:
        await log.stop()
