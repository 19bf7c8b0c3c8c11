"""Delivery benchmark: latency from a FHIR write to the rest-hook request arriving.

A real ``fhirbots serve`` process (SQLite datastore; embedded event log or Apache Kafka) with
one rest-hook Subscription pointing at a receiver in this process. Patients are POSTed at a
fixed rate (open loop: a slow server shows up as latency, not as a lower rate) and each
write's latency is the time from sending the POST until the notification carrying that
Patient arrives at the receiver: API, datastore commit, outbox relay, matcher, dispatcher
(event number, store) and the HTTP delivery. A second figure starts the clock at the commit
(the Patient's ``meta.lastUpdated``), leaving out the API and the datastore.

    python bench/deliver.py [--rates 200,1000] [--seconds 10] [--kafka HOST:PORT]
                            [--no-kafka] [--no-embedded]

A second run measures the dispatcher alone: notifications are published at the same rates
straight onto ``fhir.notifications.v1`` of an in-process engine (no API, relay or matcher)
and timed until their rest-hook request arrives.

Without ``--kafka`` a broker is started with ``deploy/kafka/broker.sh`` on a free port.
Targets: p99 <= 50 ms embedded at 200 writes/s, <= 150 ms on Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))

from _server import free_port, percentile, running_server

REPO = Path(__file__).resolve().parents[1]
BROKER = REPO / "deploy" / "kafka" / "broker.sh"
SYSTEM = "urn:fhirbots:bench"
TARGETS_MS = {"embedded": 50.0, "kafka": 150.0}
"""p99 targets at 200 writes/s."""
WARMUP_SECONDS = 2.0
"""Writes before measuring: connection pools, caches and the matcher's config are warm."""
DRAIN_SECONDS = 60.0
"""How long to wait for the last notifications after the last write."""


@dataclass(frozen=True)
class Result:
    mode: str
    rate: int
    writes: int
    delivered: int
    achieved_rate: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    pipeline_p50_ms: float
    pipeline_p99_ms: float


class Receiver:
    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.after_commit: dict[str, float] = {}
        self.event = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.perf_counter()
        wall = time.time()
        resource = json.loads(body)
        committed = datetime.fromisoformat(resource["meta"]["lastUpdated"]).timestamp()
        for identifier in resource.get("identifier", []):
            if identifier.get("system") == SYSTEM:
                self.arrived[identifier["value"]] = now
                self.after_commit[identifier["value"]] = (wall - committed) * 1000
        self.event.set()
        return web.Response(status=204)


async def _post(session: aiohttp.ClientSession, url: str, token: str, tag: str) -> None:
    patient = {
        "resourceType": "Patient",
        "gender": "female",
        "identifier": [{"system": SYSTEM, "value": tag}],
        "name": [{"family": "Bench", "given": [tag]}],
    }
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    async with session.post(f"{url}/Patient", json=patient, headers=headers) as response:
        if response.status != 201:
            raise RuntimeError(f"write failed: {response.status} {await response.text()}")


async def _run_rate(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    receiver: Receiver,
    rate: int,
    seconds: float,
    prefix: str,
) -> tuple[dict[str, float], float]:
    started: dict[str, float] = {}
    tasks: list[asyncio.Task[None]] = []
    count = int(rate * seconds)
    begin = time.perf_counter()
    for i in range(count):
        due = begin + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tag = f"{prefix}-{i}"
        started[tag] = time.perf_counter()
        tasks.append(asyncio.create_task(_post(session, url, token, tag)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begin
    await _drain(receiver, started)
    return started, count / elapsed


async def _drain(receiver: Receiver, started: dict[str, float]) -> None:
    """Wait until every tag arrived, or :data:`DRAIN_SECONDS` passed."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while any(tag not in receiver.arrived for tag in started) and time.monotonic() < deadline:
        receiver.event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.event.wait(), 0.5)


async def bench(mode: str, kafka: str | None, rates: list[int], seconds: float) -> list[Result]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    os.environ["FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS"] = "127.0.0.1/32"
    results = []
    try:
        with running_server(kafka=kafka) as server:
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=connector) as session:
                subscription = {
                    "resourceType": "Subscription",
                    "status": "active",
                    "reason": "bench",
                    "criteria": "Patient?gender=female",
                    "channel": {
                        "type": "rest-hook",
                        "endpoint": f"http://127.0.0.1:{port}/hook",
                        "payload": "application/fhir+json",
                    },
                }
                headers = {
                    "Authorization": f"Bearer {server.token}",
                    "Content-Type": "application/fhir+json",
                }
                async with session.post(
                    f"{server.url}/Subscription", json=subscription, headers=headers
                ) as response:
                    assert response.status == 201, await response.text()
                await _post(session, server.url, server.token, "first")
                deadline = time.monotonic() + 60
                while "first" not in receiver.arrived:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the first notification never arrived")
                    await asyncio.sleep(0.05)
                for rate in rates:
                    await _run_rate(
                        session,
                        server.url,
                        server.token,
                        receiver,
                        rate,
                        WARMUP_SECONDS,
                        f"warm{rate}",
                    )
                    started, achieved = await _run_rate(
                        session, server.url, server.token, receiver, rate, seconds, f"r{rate}"
                    )
                    latencies = [
                        (receiver.arrived[tag] - t0) * 1000
                        for tag, t0 in started.items()
                        if tag in receiver.arrived
                    ]
                    pipeline = [
                        receiver.after_commit[tag] for tag in started if tag in receiver.arrived
                    ]
                    results.append(
                        Result(
                            mode,
                            rate,
                            len(started),
                            len(latencies),
                            achieved,
                            percentile(latencies, 0.50),
                            percentile(latencies, 0.99),
                            max(latencies, default=float("nan")),
                            percentile(pipeline, 0.50),
                            percentile(pipeline, 0.99),
                        )
                    )
                    _print(results[-1])
    finally:
        await runner.cleanup()
    return results


async def bench_dispatcher(mode: str, kafka: str | None, rates: list[int], seconds: float) -> None:
    """The dispatcher alone: notifications published at a fixed rate straight onto
    ``fhir.notifications.v1`` of an in-process engine, until the rest-hook request arrives."""
    from fhirbots.engine.observability.logs import configure_logging
    from fhirbots.engine.runtime import Engine
    from fhirbots.engine.settings import Settings
    from fhirbots.engine.storage.model import WriteContext
    from fhirbots.schemas.notifications import ChannelSpec, Notification
    from fhirbots.schemas.topics import NOTIFICATIONS

    configure_logging("WARNING")
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    endpoint = f"http://127.0.0.1:{port}/hook"
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir), kafka=kafka, allowed_endpoint_networks=("127.0.0.1/32",)
        )
        engine = Engine(settings)
        await engine.open()
        try:
            await engine.storage.ensure_project("bench", "bench")
            subscription = {
                "resourceType": "Subscription",
                "status": "active",
                "reason": "bench",
                "criteria": "Patient?gender=female",
                "channel": {
                    "type": "rest-hook",
                    "endpoint": endpoint,
                    "payload": "application/fhir+json",
                },
            }
            await engine.fhir.update("bench", "Subscription", "s1", subscription, WriteContext())
            dispatcher = await engine.start_dispatcher()
            await dispatcher.wait_assigned()
            log = engine.event_log
            assert log is not None
            for rate in rates:
                started: dict[str, float] = {}
                count = int(rate * seconds)
                begin = time.perf_counter()
                for i in range(count):
                    delay = begin + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tag = f"d{rate}-{i}"
                    now = datetime.now(UTC)
                    patient = {
                        "resourceType": "Patient",
                        "id": tag,
                        "meta": {"lastUpdated": now.isoformat()},
                        "identifier": [{"system": SYSTEM, "value": tag}],
                    }
                    n = Notification(
                        notification_id=tag,
                        project="bench",
                        subscription_id="s1",
                        subscription_version="1",
                        event_id=tag,
                        interaction="create",
                        resource_type="Patient",
                        resource_id=tag,
                        version_id="1",
                        resource=patient,
                        time=now,
                        channel=ChannelSpec(endpoint=endpoint, payload="application/fhir+json"),
                    )
                    started[tag] = time.perf_counter()
                    await log.publish(NOTIFICATIONS, n.key, n.model_dump_json().encode())
                await _drain(receiver, started)
                latencies = [
                    (receiver.arrived[t] - t0) * 1000
                    for t, t0 in started.items()
                    if t in receiver.arrived
                ]
                print(
                    f"{mode:<8} {rate:>5} notifications/s, dispatcher only (topic -> rest-hook): "
                    f"{len(latencies)}/{count} delivered, p50 {percentile(latencies, 0.5):.1f} ms, "
                    f"p99 {percentile(latencies, 0.99):.1f} ms",
                    flush=True,
                )
        finally:
            await engine.close()
            await runner.cleanup()


def _print(r: Result) -> None:
    target = TARGETS_MS[r.mode] if r.rate == 200 else None
    verdict = ""
    if target is not None:
        verdict = f"  (target p99 <= {target:.0f} ms: {'met' if r.p99_ms <= target else 'MISSED'})"
    print(
        f"{r.mode:<8} {r.rate:>5} writes/s (achieved {r.achieved_rate:,.0f}/s): "
        f"{r.delivered}/{r.writes} delivered, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, "
        f"max {r.max_ms:.1f} ms{verdict}\n"
        f"{'':<8} {'':>5} from commit to arrival (relay, matcher, dispatcher, HTTP): "
        f"p50 {r.pipeline_p50_ms:.1f} ms, p99 {r.pipeline_p99_ms:.1f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="200,1000", help="writes per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate")
    parser.add_argument("--kafka", help="bootstrap of a running broker (else one is started)")
    parser.add_argument("--no-kafka", action="store_true", help="only the embedded log")
    parser.add_argument("--no-embedded", action="store_true", help="only Kafka")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    if not args.no_embedded:
        asyncio.run(bench("embedded", None, rates, args.seconds))
        asyncio.run(bench_dispatcher("embedded", None, rates, args.seconds))
    if args.no_kafka:
        return
    if args.kafka:
        asyncio.run(bench("kafka", args.kafka, rates, args.seconds))
        asyncio.run(bench_dispatcher("kafka", args.kafka, rates, args.seconds))
        return
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_STATE_DIR": tmp}
        subprocess.run([str(BROKER), "start"], env=env, check=True, stdout=subprocess.DEVNULL)
        try:
            bootstrap = f"127.0.0.1:{port}"
            asyncio.run(bench("kafka", bootstrap, rates, args.seconds))
            asyncio.run(bench_dispatcher("kafka", bootstrap, rates, args.seconds))
        finally:
            subprocess.run([str(BROKER), "stop"], env=env, check=False, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
