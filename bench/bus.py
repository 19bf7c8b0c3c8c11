"""Event-bus benchmark: events per second from producer to consumer through each adapter.

For the embedded SQLite log and for Apache Kafka it prints:

- publish rate: ``publish_many`` in batches, each batch durably stored / acknowledged;
- end-to-end rate: a producer and a consumer group member running together, from the first
  publish until the consumer has handled (and committed) the last event;
- delivery delay p50/p99: log timestamp of a record until its handler saw it;
- write-to-topic latency p50/p99 at a paced 500 writes/s: from a FHIR create's commit (the
  change event's time) through the outbox relay until a consumer of ``fhir.changes.v1`` has
  it (target on the embedded log: p99 <= 50 ms).

Payloads are real change events built from the Synthea bundles in the shared folder
(``$FHIRBOTS_SHARED`` or ``<repo>/../shared``), about 1-3 kB each.

    python bench/bus.py [--events 50000] [--batch 500] [--kafka HOST:PORT]
                         [--no-kafka] [--no-embedded]

Without ``--kafka`` a broker is started with ``deploy/kafka/broker.sh`` on a free port and
stopped afterwards. Targets: embedded >= 10,000 events/s, Kafka >= 20,000 events/s.

:func:`run_bus` is importable for other benchmarks (``bench/`` is put on ``sys.path``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings, Synchronous
from fhirbots.engine.eventlog.kafka import KafkaEventLog, KafkaSettings
from fhirbots.engine.eventlog.port import ConsumerOptions, EventLog, OutgoingMessage, Record
from fhirbots.schemas.events import ChangeEvent

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FHIRBOTS_SHARED", REPO.parent / "shared"))
BROKER = REPO / "deploy" / "kafka" / "broker.sh"
PARTITIONS = 8  # the default partition count of the engine's topics

WARMUP_EVENTS = 20_000
WARMUP_ROUNDS = 4  # a fresh JVM compiles the hot paths after ~80k events (measured)
EMBEDDED_TARGET = 10_000
KAFKA_TARGET = 20_000


@dataclass(frozen=True)
class BusResult:
    """Figures of one adapter run."""

    adapter: str
    events: int
    publish_per_s: float
    end_to_end_per_s: float
    delay_p50_ms: float
    delay_p99_ms: float


def change_events(count: int) -> list[OutgoingMessage]:
    """``count`` change-event messages made from Synthea resources (synthetic if absent)."""
    resources: list[dict[str, object]] = []
    for path in sorted((SHARED / "fhir-samples" / "synthea-r4").glob("*.json"))[:3]:
        bundle = json.loads(path.read_text())
        resources += [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
    if not resources:
        resources = [{"resourceType": "Patient", "id": f"p{i}"} for i in range(100)]
    messages = []
    now = datetime.now(UTC)
    for i in range(count):
        resource = resources[i % len(resources)]
        event = ChangeEvent(
            event_id=str(uuid.uuid4()),
            project="bench",
            interaction="update",
            resource_type=str(resource["resourceType"]),
            resource_id=f"{resource.get('id', i)}-{i % 5000}",
            version_id=str(i // 5000 + 1),
            resource=resource,
            time=now,
        )
        messages.append(OutgoingMessage(event.key, event.model_dump_json().encode()))
    return messages


def _chunks(messages: list[OutgoingMessage], size: int) -> Iterator[list[OutgoingMessage]]:
    for start in range(0, len(messages), size):
        yield messages[start : start + size]


async def run_bus(
    log: EventLog, name: str, messages: list[OutgoingMessage], batch: int
) -> BusResult:
    """Measure one started event log: publish rate, end-to-end rate, delivery delay."""
    run = uuid.uuid4().hex[:8]
    topic_a, topic_b = f"bench.publish.{run}", f"bench.e2e.{run}"
    await log.create_topic(topic_a, PARTITIONS)
    await log.create_topic(topic_b, PARTITIONS)

    started = time.perf_counter()
    for chunk in _chunks(messages, batch):
        await log.publish_many(topic_a, chunk)
    publish_rate = len(messages) / (time.perf_counter() - started)

    delays: list[float] = []
    done = asyncio.Event()

    async def handler(records: list[Record]) -> None:
        now = datetime.now(UTC)
        delays.extend((now - r.timestamp).total_seconds() for r in records)
        if len(delays) >= len(messages):
            done.set()

    consumer = await log.consume(
        [topic_b], f"bench-{run}", handler, options=ConsumerOptions(batch_size=batch)
    )
    await consumer.wait_assigned()
    started = time.perf_counter()
    for chunk in _chunks(messages, batch):
        await log.publish_many(topic_b, chunk)
    await asyncio.wait_for(done.wait(), timeout=600)
    e2e_rate = len(messages) / (time.perf_counter() - started)
    await consumer.stop()
    delays.sort()
    return BusResult(
        adapter=name,
        events=len(messages),
        publish_per_s=publish_rate,
        end_to_end_per_s=e2e_rate,
        delay_p50_ms=statistics.median(delays) * 1000,
        delay_p99_ms=delays[int(len(delays) * 0.99) - 1] * 1000,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _print(result: BusResult, target: int) -> None:
    verdict = "ok" if result.end_to_end_per_s >= target else "BELOW TARGET"
    print(
        f"{result.adapter:<10} {result.events:>8} events  publish {result.publish_per_s:>9,.0f}/s"
        f"  end-to-end {result.end_to_end_per_s:>9,.0f}/s (target {target:,}: {verdict})"
        f"  delay p50 {result.delay_p50_ms:,.0f} ms p99 {result.delay_p99_ms:,.0f} ms"
    )


async def bench_embedded(
    messages: list[OutgoingMessage], batch: int, synchronous: Synchronous
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = EmbeddedSettings(path=Path(tmp) / "eventlog.sqlite", synchronous=synchronous)
        log = EmbeddedEventLog(settings)
        await log.start()
        try:
            result = await run_bus(log, f"embedded/{synchronous}", messages, batch)
        finally:
            await log.stop()
    _print(result, EMBEDDED_TARGET)


async def bench_kafka(messages: list[OutgoingMessage], batch: int, bootstrap: str) -> None:
    log = KafkaEventLog(KafkaSettings(bootstrap=bootstrap, client_id="bench"))
    await log.start()
    try:
        # A fresh broker runs interpreted until the JIT has seen some traffic: warm it up so
        # the figures are the steady state.
        for _ in range(WARMUP_ROUNDS):
            await run_bus(log, "warm-up", messages[:WARMUP_EVENTS], batch)
        result = await run_bus(log, "kafka", messages, batch)
    finally:
        await log.stop()
    _print(result, KAFKA_TARGET)


WRITES_PER_S = 500
WRITE_SECONDS = 8.0
WRITE_TO_TOPIC_TARGET_MS = 50.0


async def write_to_topic(log: EventLog, label: str) -> None:
    """Paced FHIR creates through the real write path; latency until a consumer sees each."""
    from fhirbots.engine.fhir.service import FhirService
    from fhirbots.engine.stages.relay import OutboxRelay
    from fhirbots.engine.storage.model import WriteContext
    from fhirbots.engine.storage.search_index import SqlSearchIndexer
    from fhirbots.engine.storage.sqlite import SqliteStorage
    from fhirbots.schemas.topics import CHANGES

    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteStorage(Path(tmp) / "fhirbots.db", indexer=SqlSearchIndexer())
        await storage.open()
        await log.create_topic(CHANGES, partitions=PARTITIONS)
        relay = OutboxRelay(storage, log)
        service = FhirService(storage, on_commit=relay.notify)
        latencies: list[float] = []
        total = int(WRITES_PER_S * WRITE_SECONDS)
        done = asyncio.Event()

        async def handler(batch: list[Record]) -> None:
            now = datetime.now(UTC)
            for record in batch:
                event = ChangeEvent.model_validate_json(record.value)
                latencies.append((now - event.time).total_seconds() * 1000)
            if len(latencies) >= total:
                done.set()

        group = f"latency-{uuid.uuid4().hex[:8]}"
        consumer = await log.consume(
            [CHANGES], group, handler, options=ConsumerOptions(start_from="latest")
        )
        await consumer.wait_assigned()
        relay.start()
        patient = {"resourceType": "Patient", "name": [{"family": "Latency"}]}
        started = time.perf_counter()
        tasks = []
        for i in range(total):
            delay = started + i / WRITES_PER_S - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(service.create("bench", patient, WriteContext())))
        await asyncio.gather(*tasks)
        await asyncio.wait_for(done.wait(), 60)
        await consumer.stop()
        await relay.stop()
        await storage.close()
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    verdict = "ok" if p99 <= WRITE_TO_TOPIC_TARGET_MS or label != "embedded" else "BELOW TARGET"
    target = (
        f" (target p99 <= {WRITE_TO_TOPIC_TARGET_MS:.0f} ms: {verdict})"
        if label == "embedded"
        else ""
    )
    print(
        f"{label:<10} write-to-topic at {WRITES_PER_S}/s over {total} writes:"
        f" p50 {p50:.1f} ms  p99 {p99:.1f} ms{target}"
    )


async def write_to_topic_embedded() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = EmbeddedEventLog(EmbeddedSettings(path=Path(tmp) / "eventlog.sqlite"))
        await log.start()
        try:
            await write_to_topic(log, "embedded")
        finally:
            await log.stop()


async def write_to_topic_kafka(bootstrap: str) -> None:
    log = KafkaEventLog(KafkaSettings(bootstrap=bootstrap, client_id="bench-latency"))
    await log.start()
    try:
        await write_to_topic(log, "kafka")
    finally:
        await log.stop()


def main() -> None:
    # Only the figures: the adapters' info logs would drown them.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--kafka", help="bootstrap of a running broker (else one is started)")
    parser.add_argument("--no-kafka", action="store_true", help="only the embedded log")
    parser.add_argument("--no-embedded", action="store_true", help="only Kafka")
    args = parser.parse_args()

    messages = change_events(args.events)
    size = sum(len(m.value) for m in messages) / len(messages)
    print(f"{len(messages)} change events, mean payload {size:,.0f} B, {PARTITIONS} partitions")
    levels: tuple[Synchronous, ...] = () if args.no_embedded else ("FULL", "NORMAL")
    for synchronous in levels:
        asyncio.run(bench_embedded(messages, args.batch, synchronous))
    if not args.no_embedded:
        asyncio.run(write_to_topic_embedded())
    if args.no_kafka:
        return
    if args.kafka:
        asyncio.run(bench_kafka(messages, args.batch, args.kafka))
        asyncio.run(write_to_topic_kafka(args.kafka))
        return
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_STATE_DIR": tmp}
        subprocess.run([str(BROKER), "start"], env=env, check=True)
        try:
            asyncio.run(bench_kafka(messages, args.batch, f"127.0.0.1:{port}"))
            asyncio.run(write_to_topic_kafka(f"127.0.0.1:{port}"))
        finally:
            subprocess.run([str(BROKER), "stop"], env=env, check=False)


if __name__ == "__main__":
    main()
