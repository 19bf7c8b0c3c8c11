"""Consumer lag per partition as Prometheus gauges, on the embedded log: records behind and the
age of the oldest, for a whole group or a member's assignment; the sampler reports what the
process's own members hold."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from prometheus_client import REGISTRY

from fhirbots.engine.eventlog.embedded import EmbeddedEventLog
from fhirbots.engine.eventlog.lag import LagSampler, partition_lag
from fhirbots.engine.eventlog.port import OutgoingMessage, Record
from tests.waiting import eventually


def gauge(name: str, group: str, topic: str, partition: int) -> float | None:
    labels = {"group": group, "topic": topic, "partition": str(partition)}
    return REGISTRY.get_sample_value(name, labels)


async def test_records_behind_and_the_age_of_the_oldest(log: EmbeddedEventLog) -> None:
    await log.create_topic("lagging", 2)
    await log.publish_many(
        "lagging", [OutgoingMessage(key="a", value=b"1"), OutgoingMessage(key="a", value=b"2")]
    )
    await log.reset_offsets("slow", "lagging", offset=0)  # committed nothing yet
    records = await log.read("lagging", 0) + await log.read("lagging", 1)
    oldest = min(r.timestamp for r in records)
    later = oldest + timedelta(seconds=42)
    lag = await partition_lag(log, "slow", later)
    behind = {tp: n for tp, (n, _) in lag.items()}
    assert sorted(behind.values()) == [0, 2]
    ((topic, partition),) = [tp for tp, n in behind.items() if n == 2]
    assert lag[(topic, partition)][1] == 42.0
    assert gauge("fhirbots_consumer_lag_events", "slow", topic, partition) == 2
    assert gauge("fhirbots_consumer_lag_seconds", "slow", topic, partition) == 42.0
    other = 1 - partition
    assert gauge("fhirbots_consumer_lag_seconds", "slow", topic, other) == 0.0
    only = await partition_lag(log, "slow", later, only={(topic, other)})
    assert list(only) == [(topic, other)]


async def test_the_sampler_reports_its_members_partitions(log: EmbeddedEventLog) -> None:
    await log.create_topic("sampled", 1)
    handled = asyncio.Event()

    async def handler(records: list[Record]) -> None:
        handled.set()

    member = await log.consume(["sampled"], "sampling", handler)
    await member.wait_assigned()
    await log.publish("sampled", "k", b"x")
    await asyncio.wait_for(handled.wait(), 30)  # bounds only a failure
    sampler = LagSampler(log)

    async def caught_up() -> bool:
        await sampler.sample()
        return gauge("fhirbots_consumer_lag_events", "sampling", "sampled", 0) == 0

    await eventually(caught_up, "the sampler to see the member caught up")
    assert gauge("fhirbots_consumer_lag_seconds", "sampling", "sampled", 0) == 0.0
