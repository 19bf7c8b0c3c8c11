"""Sizing benchmark: what one process of each role sustains in the distributed mode.

The deployment of the chaos test (``tests/integration/chaos/``: PostgreSQL, a KRaft broker and
each process on a network namespace of its own, on this machine), one process at a time:

1. **API**: one ``fhirbots serve --api-only``, ``--clients`` concurrent Patient creates for
   ``--seconds``: acknowledged writes a second, p50/p99 latency.
2. **relay**: the API stopped, every outbox row marked unpublished again, one
   ``fhirbots worker relay`` started: change events published a second.
3. **matcher**: one ``fhirbots worker matcher`` reads the whole change topic (both copies of
   every event) against ``--subscriptions`` Subscriptions, one of which matches every Patient:
   events matched a second.
4. **dispatcher**: one ``fhirbots worker dispatcher`` takes the notifications: notifications
   a second through intake (event numbers) and rest-hook deliveries a second (all of one
   subscription, so one lane, in order).

Rates count from the first progress seen to the last, so a process's start-up and its first
group join are left out.

    sudo python bench/sizing.py [--seconds 15] [--clients 16] [--subscriptions 200]

Needs root on Linux (``ip netns``), Debian's PostgreSQL 15 server binaries and the Kafka jars.
Without root it says so and exits 0 (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import percentile
from fhirbots.engine.stages.dispatcher import DISPATCHER_GROUP
from fhirbots.engine.stages.matcher import MATCHER_GROUP
from fhirbots.schemas.topics import CHANGES, NOTIFICATIONS
from tests.integration.chaos.cluster import Cluster
from tests.integration.chaos.load import Api
from tests.integration.chaos.netns import inside
from tests.integration.chaos.processes import progress
from tests.integration.chaos.receiver import Receipts

NODES = ("api1", "receiver", "relay1", "matcher1", "dispatcher1")

PHASE_SECONDS = 300.0
"""Bound of one worker phase (a failure, not a measurement)."""

POLL_SECONDS = 0.1
"""How often a phase looks at its progress."""


async def rate(look: Callable[[], Awaitable[tuple[int, int]]]) -> tuple[float, int]:
    """(items a second, items) of a phase: ``look`` says (done, total); the rate runs from
    the first look that saw progress to the one that saw everything done."""
    deadline = time.monotonic() + PHASE_SECONDS
    first: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        done, total = await look()
        now = time.monotonic()
        if first is None and done > 0:
            first = (now, done)
        if total and done >= total:
            if first is None or now <= first[0]:
                return float("nan"), total
            return (done - first[1]) / (now - first[0]), total
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError("the phase did not finish")


async def api_phase(api: Api, seconds: float, clients: int) -> tuple[float, list[float]]:
    """Writes a second and each write's latency, ``clients`` writing for ``seconds``."""
    latencies: list[float] = []
    end = time.monotonic() + seconds

    async def client(n: int) -> None:
        i = 0
        while time.monotonic() < end:
            started = time.monotonic()
            patient = {
                "resourceType": "Patient",
                "gender": "female",
                "name": [{"family": f"S{n}x{i}"}],
            }
            status, _ = await api.call("POST", "Patient", patient)
            if status == 201:
                latencies.append(time.monotonic() - started)
            i += 1

    began = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return len(latencies) / (time.monotonic() - began), latencies


async def subscriptions(api: Api, receiver_url: str, count: int) -> None:
    """One Subscription matching every new Patient, ``count - 1`` matching none."""
    for n in range(count):
        criteria = "Patient?gender=female" if n == 0 else f"Patient?family=Nobody{n}"
        await api.expect(
            "POST",
            "Subscription",
            {
                "resourceType": "Subscription",
                "status": "active",
                "reason": "sizing",
                "criteria": criteria,
                "channel": {
                    "type": "rest-hook",
                    "endpoint": f"{receiver_url}/notify",
                    "payload": "application/fhir+json",
                },
            },
            201,
        )


async def measure(args: argparse.Namespace) -> None:
    cluster = Cluster.make()
    try:
        cluster.wire(NODES)
        with inside(cluster.network.nodes["client"].namespace):
            await phases(cluster, args)
    finally:
        cluster.close()


async def phases(cluster: Cluster, args: argparse.Namespace) -> None:
    await cluster.start_services()
    assert cluster.postgres is not None
    assert cluster.broker is not None
    bootstrap = cluster.broker.bootstrap
    await cluster.start_api("api1")
    cluster.start_receiver()
    await cluster.receiver_ready()

    def say(line: str) -> None:
        print(line, flush=True)

    api = Api(cluster.bases, cluster.token)
    db = await asyncpg.connect(cluster.postgres.dsn)
    try:
        await subscriptions(api, cluster.receiver_url, args.subscriptions)
        writes, latencies = await api_phase(api, args.seconds, args.clients)
        say(
            f"  API (serve --api-only), {args.clients} concurrent creates: {writes:,.0f} writes/s "
            f"(p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, {len(latencies):,} writes)"
        )

        async def unpublished() -> tuple[int, int]:
            count = await db.fetchval("SELECT count(*) FROM outbox WHERE NOT published")
            total = await db.fetchval("SELECT count(*) FROM outbox")
            return int(total - count), int(total)

        await rate(unpublished)  # the API's own relay finishes its share
        cluster.processes["api1"].stop()
        await db.execute("UPDATE outbox SET published = FALSE")
        cluster.start_worker("relay1", "relay")
        relayed, events = await rate(unpublished)
        say(f"  relay: {relayed:,.0f} events/s ({events:,} events)")

        async def matched() -> tuple[int, int]:
            return await progress(bootstrap, MATCHER_GROUP, CHANGES)

        cluster.start_worker("matcher1", "matcher")
        matching, events = await rate(matched)
        say(
            f"  matcher, {args.subscriptions} subscriptions (1 matching): "
            f"{matching:,.0f} events/s ({events:,} events)"
        )

        async def dispatched() -> tuple[int, int]:
            return await progress(bootstrap, DISPATCHER_GROUP, NOTIFICATIONS)

        cluster.start_worker("dispatcher1", "dispatcher")
        intake, notifications = await rate(dispatched)
        receipts = Receipts(cluster.receipts_path)

        async def delivered() -> tuple[int, int]:
            receipts.refresh()
            return len(receipts.first), len(latencies)

        await rate(delivered)
        times = sorted(receipts.first.values())
        deliveries = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        say(
            f"  dispatcher: {intake:,.0f} notifications/s taken in ({notifications:,}), "
            f"{deliveries:,.0f} rest-hook deliveries/s of one subscription "
            f"({len(times):,} delivered)"
        )
    finally:
        await db.close()
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="API phase length")
    parser.add_argument("--clients", type=int, default=16, help="concurrent writers")
    parser.add_argument("--subscriptions", type=int, default=200, help="subscriptions")
    args = parser.parse_args()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        print("sizing: skipped, network namespaces need root on Linux")
        return
    print(f"sizing: one process of each role, {os.cpu_count()} cores", flush=True)
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
