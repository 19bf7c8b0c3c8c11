"""Dashboard under load: JSON endpoint latency and live-tail liveness while events flow.

A real ``fhirbots serve`` process (embedded mode) takes transaction Bundles of Observations at a
fixed rate (open loop), 1,000 change events per second by default, for a minute; one rest-hook
Subscription matches a tenth of them, so notifications, delivery attempts and their records flow
too. Meanwhile a signed-in dashboard client (session cookie) calls every JSON endpoint of the
dashboard in turn and keeps a live-tail stream (Server-Sent Events) open, as an open page does.

Printed: the event rate reached, per endpoint the p50/p99/max latency and the share of answers
that were not 200, and for the live tail how many events arrived and the longest silence
between two of them (a page "freezes" when that grows). Target: every endpoint's p99 under
100 ms at 1,000 events/s.

    python bench/dashboard.py [--rate 1000] [--seconds 60] [--bundle 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.append(str(Path(__file__).resolve().parent))

from _server import free_port, percentile, running_server

TARGET_P99_MS = 100.0
ENDPOINTS = (
    "/dashboard/api/stats?range=1h",
    "/dashboard/api/stats?range=24h",
    "/dashboard/api/subscriptions",
    "/dashboard/api/bots",
    "/dashboard/api/executions",
    "/dashboard/api/events?topic=fhir.changes.v1&limit=50",
    "/dashboard/api/events?topic=fhir.changes.v1&field=resource.code.coding.code%3D8867-4&limit=50",
)
"""Every view's JSON API (a trace is added once one is known)."""


@dataclass
class Timings:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    tail_events: int = 0
    tail_gaps: list[float] = field(default_factory=list)
    sampled_notices: int = 0
    sent_events: int = 0


def bundle(count: int, matching: int) -> dict[str, Any]:
    """A transaction of ``count`` Observations, ``matching`` of them coded for the hook."""
    entries = []
    for i in range(count):
        code = "8867-4" if i < matching else "29463-7"
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                    "valueQuantity": {"value": 60 + i % 40, "unit": "/min"},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def load(
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    rate: int,
    size: int,
    seconds: float,
    timings: Timings,
) -> None:
    """Open loop: a Bundle every ``size / rate`` seconds, whatever the server's pace."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    interval = size / rate
    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []

    async def send() -> None:
        async with session.post(base, json=bundle(size, size // 10), headers=headers) as r:
            if r.status == 200:
                timings.sent_events += size
            await r.read()

    n = 0
    while time.monotonic() - started < seconds:
        tasks.append(asyncio.create_task(send()))
        n += 1
        await asyncio.sleep(max(started + n * interval - time.monotonic(), 0))
    await asyncio.gather(*tasks, return_exceptions=True)


async def poll(
    session: aiohttp.ClientSession, origin: str, stop: asyncio.Event, timings: Timings
) -> None:
    """Every endpoint in turn, as pages refresh them, until ``stop``."""
    while not stop.is_set():
        for path in ENDPOINTS:
            began = time.perf_counter()
            async with session.get(origin + path) as response:
                await response.read()
                elapsed = (time.perf_counter() - began) * 1000
            name = path.split("?")[0] + _query_kind(path)
            timings.latencies.setdefault(name, []).append(elapsed)
            if response.status != 200:
                timings.failures[name] = timings.failures.get(name, 0) + 1
        await asyncio.sleep(0.05)


def _query_kind(path: str) -> str:
    if "range=24h" in path:
        return " (24h)"
    if "field=" in path:
        return " (field search)"
    return ""


async def tail(
    session: aiohttp.ClientSession, origin: str, stop: asyncio.Event, timings: Timings
) -> None:
    """Hold the live tail open and note the silences between events."""
    last = time.monotonic()
    with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
        async with session.get(origin + "/dashboard/api/tail") as response:
            if response.status != 200:
                timings.failures["/dashboard/api/tail"] = 1
                return
            async for raw in response.content:
                if stop.is_set():
                    return
                line = raw.decode(errors="replace").strip()
                if line.startswith("data:"):
                    now = time.monotonic()
                    timings.tail_gaps.append(now - last)
                    last = now
                    timings.tail_events += 1
                    if "sampled" in line:
                        timings.sampled_notices += 1


async def hook(port: int) -> web.AppRunner:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def measure(args: argparse.Namespace) -> Timings:
    timings = Timings()
    env = {"FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS": "127.0.0.0/8"}
    hook_port = free_port()
    receiver = await hook(hook_port)
    with running_server(extra_env=env) as server:
        origin = server.url.removesuffix("/fhir/R4")
        auth = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/fhir+json"}
        # The page keeps its session cookie for 127.0.0.1, which aiohttp's jar refuses by default.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession() as api, aiohttp.ClientSession(cookie_jar=jar) as page:
            subscription = {
                "resourceType": "Subscription",
                "status": "active",
                "reason": "bench",
                "criteria": "Observation?code=http://loinc.org|8867-4",
                "channel": {"type": "rest-hook", "endpoint": f"http://127.0.0.1:{hook_port}/hook"},
            }
            async with api.post(server.url + "/Subscription", json=subscription, headers=auth) as r:
                assert r.status == 201, await r.text()
            async with page.post(
                origin + "/dashboard/login", data={"key": server.token, "next": "/dashboard/"}
            ) as r:
                assert r.status == 200, "sign-in failed"
            stop = asyncio.Event()
            watchers = [
                asyncio.create_task(poll(page, origin, stop, timings)),
                asyncio.create_task(tail(page, origin, stop, timings)),
            ]
            await load(api, server.url, server.token, args.rate, args.bundle, args.seconds, timings)
            stop.set()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
    await receiver.cleanup()
    return timings


def report(args: argparse.Namespace, timings: Timings) -> None:
    print(
        f"load: {timings.sent_events / args.seconds:,.0f} change events/s committed "
        f"(asked {args.rate:,}/s for {args.seconds:g} s, Bundles of {args.bundle})"
    )
    print(f"{'endpoint':<48} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'not 200':>8}")
    worst = 0.0
    for name, values in sorted(timings.latencies.items()):
        p99 = percentile(values, 0.99)
        worst = max(worst, p99)
        failed = timings.failures.get(name, 0)
        print(
            f"{name:<48} {len(values):>6} {percentile(values, 0.5):>8.1f} {p99:>8.1f} "
            f"{max(values):>8.1f} {failed:>8}"
        )
    gap = max(timings.tail_gaps[1:], default=float("nan"))
    print(
        f"live tail: {timings.tail_events:,} events, longest silence {gap:.2f} s, "
        f"{timings.sampled_notices} sampling notices"
    )
    verdict = "met" if worst < TARGET_P99_MS else "missed"
    print(f"worst p99 {worst:.1f} ms: target {TARGET_P99_MS:g} ms {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="change events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--bundle", type=int, default=100, help="resources per transaction")
    args = parser.parse_args()
    report(args, asyncio.run(measure(args)))


if __name__ == "__main__":
    main()
