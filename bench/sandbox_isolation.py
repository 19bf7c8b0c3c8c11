"""What tenant isolation costs the bot executor: same project vs a project switch.

Run from the repository root: ``python bench/sandbox_isolation.py [--iterations N] [--pool N]``

A worker serves one project for its whole life, so an execution for a project without an
idle worker of its own (or a clean one) waits for a worker of another project to be killed
and a fresh one started. Figures printed:

- latency of one execution at a time when every execution is of the same project (warm
  worker), of a project never seen before (with a clean spare worker ready, and without
  spares: a worker of another project is killed and one started), and of more projects than
  workers in turn (a worker is replaced nearly every time);
- throughput of one project (it gets its share, half the workers), of two projects side by
  side, and of as many projects as workers plus one in turn (some executions switch).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import itertools
import time

from bench.sandbox import TRIVIAL, report
from fhirbots.bots.executor import ExecutionRequest, ProcessBotExecutor
from fhirbots.bots.policy import SandboxPolicy
from fhirbots.bots.testing import InMemoryFhirGateway, make_bot
from fhirbots.schemas.bot import Bot


async def latencies(
    executor: ProcessBotExecutor, bot: Bot, projects: list[str], iterations: int
) -> list[float]:
    """One execution at a time, cycling through ``projects``."""
    samples = []
    for i, project in zip(range(iterations), itertools.cycle(projects), strict=False):
        started = time.perf_counter()
        result = await executor.execute(ExecutionRequest(bot=bot, input=i, project=project))
        samples.append((time.perf_counter() - started) * 1000)
        if not result.ok:
            raise SystemExit(f"execution failed: {result.error}")
    return samples


async def throughput(
    executor: ProcessBotExecutor, bot: Bot, projects: list[str], iterations: int, lanes: int
) -> float:
    """Executions per second with ``lanes`` in flight, each lane cycling through projects."""
    queue = iter(range(iterations))

    async def lane(offset: int) -> None:
        cycle = itertools.cycle(projects[offset:] + projects[:offset])
        for i in queue:
            request = ExecutionRequest(bot=bot, input=i, project=next(cycle))
            if not (await executor.execute(request)).ok:
                raise SystemExit("execution failed")

    started = time.perf_counter()
    await asyncio.gather(*(lane(n % len(projects)) for n in range(lanes)))
    return iterations / (time.perf_counter() - started)


async def new_projects(executor: ProcessBotExecutor, bot: Bot, count: int) -> list[float]:
    """Each execution of a project never seen before, once a clean worker is ready (when the
    policy keeps spares) or right away (when it keeps none)."""
    samples = []
    for i in range(count):
        for _ in range(3000):  # a benchmark may poll the executor's state; at most 30 s
            if not executor.policy.spare_workers or any(w.project is None for w in executor._idle):
                break
            await asyncio.sleep(0.01)
        samples.extend(await latencies(executor, bot, [f"new-{i}"], 1))
    return samples


async def main(iterations: int, pool: int) -> None:
    bot = make_bot(TRIVIAL)
    for spares in (1, 0):
        policy = SandboxPolicy(pool_size=pool, spare_workers=spares)
        async with ProcessBotExecutor(InMemoryFhirGateway(), policy) as executor:
            print(
                f"pool of {pool} workers and {spares} spare, each project's share "
                f"{policy.project_share}; {iterations} iterations",
                flush=True,
            )
            await latencies(executor, bot, ["p0"], 200)
            report("same project (warm worker)", await latencies(executor, bot, ["p0"], iterations))
            report(
                f"a new project ({spares} spare)",
                await new_projects(executor, bot, max(20, iterations // 40)),
            )
            switching = [f"s{i}" for i in range(pool + 1)]
            report(
                f"{pool + 1} projects in turn, one at a time",
                await latencies(executor, bot, switching, max(20, iterations // 40)),
            )
            for name, projects, count in (
                ("throughput, one project", ["p0"], iterations * 2),
                ("throughput, two projects side by side", ["p0", "p1"], iterations * 2),
                (f"throughput, {pool + 1} projects in turn", switching, max(40, iterations // 20)),
            ):
                await latencies(executor, bot, projects, len(projects) * 2)  # settle the workers
                rate = await throughput(executor, bot, projects, count, lanes=2 * pool)
                print(f"{name:<44} {rate:8.0f} exec/s", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--pool", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.iterations, args.pool))
