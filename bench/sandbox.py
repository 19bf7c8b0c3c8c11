"""Bot executor benchmark: overhead and throughput of sandboxed executions.

Run from the repository root: ``python bench/sandbox.py [--iterations N] [--pool N]
[--concurrency N]``

Figures printed:
- trivial bot on warm workers: p50/p99 latency of one execution at a time, and executions
  per second with several in flight;
- first execution after a deploy (every execution brings new code to compile);
- a bot making three FHIR calls (read, search, create) against the in-memory gateway.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from fhirbots.bots.executor import ExecutionRequest, ProcessBotExecutor
from fhirbots.bots.policy import SandboxPolicy
from fhirbots.bots.testing import InMemoryFhirGateway, make_bot
from fhirbots.schemas.bot import Bot

TRIVIAL = "def handler(fhir, event):\n    return event.input\n"

THREE_CALLS = """
def handler(fhir, event):
    patient = fhir.read("Patient", "p1")
    found = fhir.search("Observation", {"subject": "Patient/p1"})
    flag = fhir.create({"resourceType": "Flag", "status": "active",
                        "subject": {"reference": "Patient/" + patient["id"]},
                        "code": {"text": str(found["total"])}})
    return flag["id"]
"""


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(name: str, latencies_ms: list[float]) -> None:
    line = (
        f"{name:<44} n={len(latencies_ms):<6} p50={percentile(latencies_ms, 0.5):7.3f} ms  "
        f"p99={percentile(latencies_ms, 0.99):7.3f} ms  "
        f"mean={statistics.fmean(latencies_ms):7.3f} ms"
    )
    print(line, flush=True)


async def sequential(
    executor: ProcessBotExecutor, bots: Callable[[int], Bot], iterations: int
) -> list[float]:
    latencies = []
    for i in range(iterations):
        request = ExecutionRequest(bot=bots(i), input=i)
        started = time.perf_counter()
        result = await executor.execute(request)
        latencies.append((time.perf_counter() - started) * 1000)
        if not result.ok:
            raise SystemExit(f"execution failed: {result.error}")
    return latencies


async def throughput(
    executor: ProcessBotExecutor, bot: Bot, iterations: int, concurrency: int
) -> float:
    queue = iter(range(iterations))

    async def lane() -> None:
        for i in queue:
            result = await executor.execute(ExecutionRequest(bot=bot, input=i))
            if not result.ok:
                raise SystemExit(f"execution failed: {result.error}")

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return iterations / (time.perf_counter() - started)


async def main(iterations: int, pool: int, concurrency: int) -> None:
    gateway = InMemoryFhirGateway(
        [{"resourceType": "Patient", "id": "p1"}]
        + [
            {
                "resourceType": "Observation",
                "id": f"o{i}",
                "status": "final",
                "subject": {"reference": "Patient/p1"},
            }
            for i in range(5)
        ]
    )
    policy = SandboxPolicy(pool_size=pool)
    started = time.perf_counter()
    async with ProcessBotExecutor(gateway, policy) as executor:
        print(
            f"pool of {pool} workers ready in {(time.perf_counter() - started) * 1000:.0f} ms; "
            f"{iterations} iterations, {concurrency} in flight for throughput",
            flush=True,
        )
        trivial = make_bot(TRIVIAL)
        await sequential(executor, lambda _: trivial, 200)  # warm every worker's cache
        report(
            "trivial bot, warm worker", await sequential(executor, lambda _: trivial, iterations)
        )
        rate = await throughput(executor, trivial, iterations * 2, concurrency)
        print(f"{'trivial bot throughput':<44} {rate:8.0f} exec/s", flush=True)

        fresh = [make_bot(TRIVIAL + f"# deploy {i}\n") for i in range(iterations // 4)]
        report(
            "first execution after deploy (new code)",
            await sequential(executor, lambda i: fresh[i], len(fresh)),
        )

        calls = make_bot(THREE_CALLS)
        await sequential(executor, lambda _: calls, 50)
        report(
            "bot with 3 FHIR calls (in-memory gateway)",
            await sequential(executor, lambda _: calls, iterations // 2),
        )
        rate = await throughput(executor, calls, iterations, concurrency)
        print(f"{'3-FHIR-call bot throughput':<44} {rate:8.0f} exec/s", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--pool", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.iterations, args.pool, args.concurrency))
