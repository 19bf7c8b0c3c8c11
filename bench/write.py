"""Write throughput of the FHIR API over HTTP, on SQLite and PostgreSQL.

Prints single creates per second with one and eight concurrent clients (p50/p99 latency),
and resources per second through transaction Bundles (the Synthea sample bundles).

    python bench/write.py [--seconds 10] [--postgres DSN] [--repeat N]

With ``--repeat N`` every server is started N times and a summary gives each figure's median
and range: on the 2-core benchmark machine the same build can measure a third apart from one
server start to the next, so compare builds by medians of interleaved runs, not single runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._server import Server, percentile, running_server

SHARED = Path(os.environ.get("FHIRBOTS_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def patient(i: int) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:bench", "value": str(i)}],
            "name": [{"family": f"Bench{i}", "given": ["Ada"]}],
            "gender": "female",
            "birthDate": "1970-01-01",
        }
    )


async def single_creates(
    server: Server, clients: int, seconds: float
) -> tuple[float, float, float]:
    headers = {
        "Authorization": f"Bearer {server.token}",
        "Content-Type": "application/fhir+json",
        "Prefer": "return=minimal",
    }
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async with aiohttp.ClientSession(headers=headers) as session:

        async def client() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(f"{server.url}/Patient", data=patient(next(counter))) as r:
                    await r.read()
                    if r.status != 201:
                        raise RuntimeError(f"create failed: {r.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return (
        len(latencies) / elapsed,
        percentile(latencies, 0.5) * 1e3,
        percentile(latencies, 0.99) * 1e3,
    )


async def transactions(
    server: Server, bundles: list[bytes], count: list[int], clients: int = 2
) -> float:
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/fhir+json"}
    queue = list(zip(bundles, count, strict=True))
    total = 0
    async with aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:

        async def client() -> None:
            nonlocal total
            while queue:
                body, n = queue.pop()
                async with session.post(server.url, data=body) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"transaction failed: {r.status}")
                total += n

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return total / elapsed


Figures = dict[str, float]
"""One run's rates by name (``single creates, 8 client(s)``, ``transaction bundles``)."""


async def run(
    label: str, server: Server, seconds: float, bundles: list[bytes], counts: list[int]
) -> Figures:
    figures: Figures = {}
    await single_creates(server, 8, 1.0)  # warm-up: models built, connections open
    for clients in (1, 8):
        rate, p50, p99 = await single_creates(server, clients, seconds)
        name = f"single creates, {clients} client(s)"
        figures[name] = rate
        print(
            f"{label:<14} {name}: {rate:8.0f}/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms",
            flush=True,
        )
    rate = await transactions(server, bundles, counts)
    figures["transaction bundles"] = rate
    print(
        f"{label:<14} transaction bundles: {rate:8.0f} resources/s "
        f"({sum(counts)} resources in {len(bundles)} bundles)",
        flush=True,
    )
    return figures


def summary(runs: dict[str, list[Figures]]) -> None:
    """Median and range of every figure over the repeated runs."""
    print("\nmedian (min - max) over runs:")
    for label, results in runs.items():
        for name in results[0]:
            values = [figures[name] for figures in results]
            print(
                f"{label:<14} {name:<28} {statistics.median(values):8.0f}  "
                f"({min(values):.0f} - {max(values):.0f}, {len(values)} runs)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--postgres", default=os.environ.get("FHIRBOTS_TEST_DATABASE_URL"))
    parser.add_argument("--repeat", type=int, default=1, help="server starts per engine and mode")
    args = parser.parse_args()
    files = sorted((SHARED / "fhir-samples" / "synthea-r4").glob("*.json"))
    bundles = [f.read_bytes() for f in files]
    counts = [len(orjson.loads(b)["entry"]) for b in bundles]
    engines: list[tuple[str, str | None]] = [("sqlite", None)]
    if args.postgres:
        engines.append(("postgres", args.postgres))
    else:
        print("postgres: skipped (pass --postgres DSN or set FHIRBOTS_TEST_DATABASE_URL)")
    runs: dict[str, list[Figures]] = defaultdict(list)
    for _ in range(args.repeat):
        for name, dsn in engines:
            # api: the API and the outbox relay (`serve --api-only`); full: the matcher, the
            # dispatcher and the bot runtime in the same process too (plain `serve`).
            for api_only in (True, False):
                label = f"{name}/{'api' if api_only else 'full'}"
                with running_server(database_url=dsn, api_only=api_only) as server:
                    runs[label].append(
                        asyncio.run(run(label, server, args.seconds, bundles, counts))
                    )
    if args.repeat > 1:
        summary(runs)


if __name__ == "__main__":
    main()
