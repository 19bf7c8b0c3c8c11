"""Bots in the engine: ``$execute`` over HTTP and subscription runs through the engine's
datastore (embedded SQLite, records and AuditEvents included).

Run from the repository root: ``python bench/bots_engine.py [--iterations N] [--concurrency N]``

Figures printed:
- ``$execute`` of a trivial bot over HTTP (aiohttp client and server in one process): p50/p99
  one at a time, and executions per second with several in flight;
- ``BotRuntime.invoke`` (the dispatcher's path) of a bot making three FHIR calls (read, search,
  create) against the real datastore, with its execution record and AuditEvent.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiohttp.test_utils import TestClient, TestServer

from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import WriteContext
from fhirbots.schemas.notifications import ChannelSpec, Notification

PROJECT = "bench"

TRIVIAL = "def handler(fhir, event):\n    return event.input\n"

THREE_CALLS = """
def handler(fhir, event):
    patient = fhir.read("Patient", "p1")
    found = fhir.search("Observation", {"subject": "Patient/p1", "_count": 5})
    flag = fhir.create({"resourceType": "Flag", "status": "active",
                        "subject": {"reference": "Patient/" + patient["id"]},
                        "code": {"text": str(len(found["entry"]))}})
    return flag["id"]
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(name: str, latencies_ms: list[float], per_second: float | None = None) -> None:
    line = (
        f"{name:<46} n={len(latencies_ms):<5} p50={percentile(latencies_ms, 0.5):7.2f} ms  "
        f"p99={percentile(latencies_ms, 0.99):7.2f} ms  "
        f"mean={statistics.fmean(latencies_ms):7.2f} ms"
    )
    if per_second is not None:
        line += f"  {per_second:8.0f}/s"
    print(line, flush=True)


def notification(i: int) -> Notification:
    return Notification(
        notification_id=f"n{i}",
        project=PROJECT,
        subscription_id="s1",
        subscription_version="1",
        event_id=f"e{i}",
        interaction="create",
        resource_type="Observation",
        resource_id="o1",
        version_id="1",
        resource={"resourceType": "Observation", "id": "o1", "status": "final"},
        time=datetime.now(UTC),
        channel=ChannelSpec(endpoint="Bot/x"),
    )


async def bench_execute(engine: Engine, iterations: int, concurrency: int) -> None:
    token = await engine.create_project("http", "HTTP bench")
    client = TestClient(TestServer(engine.app()))
    await client.start_server()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        created = await client.post(
            "/fhir/R4/Bot",
            data=orjson.dumps(
                {"resourceType": "Bot", "name": "t", "code": TRIVIAL, "auditEventTrigger": "never"}
            ),
            headers={**headers, "Content-Type": "application/fhir+json"},
        )
        path = f"/fhir/R4/Bot/{(await created.json())['id']}/$execute"

        async def once(i: int) -> float:
            started = time.perf_counter()
            resp = await client.post(path, data=orjson.dumps({"i": i}), headers=headers)
            assert resp.status == 200, await resp.text()
            await resp.read()
            return (time.perf_counter() - started) * 1000

        for i in range(20):
            await once(i)
        report("$execute trivial bot, one at a time", [await once(i) for i in range(iterations)])
        started = time.perf_counter()
        latencies: list[float] = []
        for start in range(0, iterations, concurrency):
            latencies += await asyncio.gather(
                *(once(i) for i in range(start, min(iterations, start + concurrency)))
            )
        rate = iterations / (time.perf_counter() - started)
        report(f"$execute trivial bot, {concurrency} in flight", latencies, rate)
    finally:
        await client.close()


async def bench_invoke(engine: Engine, iterations: int, concurrency: int) -> None:
    await engine.storage.ensure_project(PROJECT, "Bench")
    context = WriteContext(author="bench")
    await engine.fhir.update(PROJECT, "Patient", "p1", {"resourceType": "Patient"}, context)
    bot = await engine.fhir.create(
        PROJECT, {"resourceType": "Bot", "name": "three", "code": THREE_CALLS}, context
    )
    assert bot.stored is not None
    bot_id = bot.stored.id

    async def once(i: int) -> float:
        started = time.perf_counter()
        outcome = await engine.bots.invoke(PROJECT, bot_id, notification(i), f"k{i}")
        assert outcome.success, outcome.message
        return (time.perf_counter() - started) * 1000

    for i in range(10):
        await once(i)
    report("invoke, 3 FHIR calls + record + AuditEvent", [await once(i) for i in range(iterations)])
    started = time.perf_counter()
    latencies: list[float] = []
    for start in range(0, iterations, concurrency):
        latencies += await asyncio.gather(
            *(once(i) for i in range(start, min(iterations, start + concurrency)))
        )
    rate = iterations / (time.perf_counter() - started)
    report(f"invoke, 3 FHIR calls, {concurrency} in flight", latencies, rate)


async def main(iterations: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        engine = Engine(Settings(data_dir=Path(folder), log_level="WARNING"))
        await engine.open()
        try:
            await engine.start_bots(cron=False)
            await bench_execute(engine, iterations, concurrency)
            await bench_invoke(engine, iterations, concurrency)
        finally:
            await engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()
    from fhirbots.engine.observability.logs import configure_logging

    configure_logging("WARNING")
    asyncio.run(main(options.iterations, options.concurrency))
