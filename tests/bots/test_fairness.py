"""Fairness between projects: a bounded share of the workers and a bounded queue per project.

Every assertion is on order and state (who finished, who waits, what was refused), never on
how long something took.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from fhirbots.bots._fairness import ProjectSlots
from fhirbots.bots.errors import ExecutorError, ProjectBusyError
from fhirbots.bots.executor import ExecutionRequest, ExecutionResult, ProcessBotExecutor
from fhirbots.bots.gateway import CallContext
from fhirbots.bots.policy import SandboxPolicy
from fhirbots.bots.testing import InMemoryFhirGateway, make_bot
from tests.waiting import eventually

LOOPING = """
def handler(fhir, event):
    fhir.search("Patient", {})          # tells the test it is running
    while True:
        pass
"""

WAITING = """
def handler(fhir, event):
    fhir.read("Patient", "gate")        # held by the test until it opens the gate
    return event.input
"""

RECORDING = """
def handler(fhir, event):
    fhir.create({"resourceType": "Basic", "code": {"text": str(event.input)}})
    return event.input
"""

TRIVIAL = """
def handler(fhir, event):
    return "done"
"""


class GatedGateway(InMemoryFhirGateway):
    """Reads wait for :attr:`gate`; searches count the looping bots that started."""

    def __init__(self) -> None:
        super().__init__([{"resourceType": "Patient", "id": "gate"}])
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.created: list[str] = []

    async def read(self, ctx: CallContext, resource_type: str, resource_id: str) -> dict[str, Any]:
        await self.gate.wait()
        return await super().read(ctx, resource_type, resource_id)

    async def search(
        self, ctx: CallContext, resource_type: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        self.started.append(ctx.project)
        return await super().search(ctx, resource_type, params)

    async def create(self, ctx: CallContext, resource: dict[str, Any]) -> dict[str, Any]:
        self.created.append(resource["code"]["text"])
        return await super().create(ctx, resource)


POLICY = SandboxPolicy(pool_size=2, timeout_seconds=120, cpu_seconds=120, project_queue=3)
"""Two workers, so each project's share is one; looping bots run until the test ends."""


@pytest_asyncio.fixture
async def gated() -> AsyncIterator[tuple[ProcessBotExecutor, GatedGateway]]:
    gateway = GatedGateway()
    async with ProcessBotExecutor(gateway, POLICY) as executor:
        yield executor, gateway
        gateway.gate.set()


def run(
    executor: ProcessBotExecutor, source: str, project: str, *, bounded: bool = False, **kw: Any
) -> asyncio.Task[ExecutionResult]:
    request = ExecutionRequest(bot=make_bot(source, access=None), project=project, **kw)
    return asyncio.ensure_future(executor.execute(request, bounded=bounded))


async def test_default_share_is_half_the_pool_rounded_up() -> None:
    assert SandboxPolicy(pool_size=2).project_share == 1
    assert SandboxPolicy(pool_size=5).project_share == 3
    assert SandboxPolicy(pool_size=1).project_share == 1
    assert SandboxPolicy(pool_size=4, project_concurrency=3).project_share == 3
    assert SandboxPolicy(pool_size=4, project_concurrency=9).project_share == 4


async def test_a_flooding_project_does_not_hold_back_another(
    gated: tuple[ProcessBotExecutor, GatedGateway],
) -> None:
    executor, gateway = gated
    flood = [run(executor, LOOPING, "a") for _ in range(6)]
    await eventually(lambda: gateway.started == ["a"], "project a's first looping bot runs")
    assert executor.slots.running("a") == 1
    assert executor.slots.waiting("a") == 5
    result = await run(executor, TRIVIAL, "b")
    assert result.status == "success" and result.output == "done"
    assert not any(task.done() for task in flood)  # all six still running or waiting
    assert gateway.started == ["a"]
    await executor.close()
    ended = await asyncio.gather(*flood, return_exceptions=True)
    assert [r.status for r in ended if isinstance(r, ExecutionResult)] == ["killed"]
    assert sum(isinstance(r, ExecutorError) for r in ended) == 5


async def test_direct_callers_over_the_queue_are_refused_and_others_wait_in_order(
    gated: tuple[ProcessBotExecutor, GatedGateway],
) -> None:
    executor, gateway = gated
    holder = run(executor, WAITING, "a", input="holder", bounded=True)
    await eventually(lambda: executor.slots.running("a") == 1, "the holder runs")
    queued = [run(executor, RECORDING, "a", input=f"direct-{i}", bounded=True) for i in range(3)]
    await eventually(lambda: executor.slots.waiting("a") == 3, "three wait")
    with pytest.raises(ProjectBusyError) as refused:
        await executor.execute(ExecutionRequest(bot=make_bot(TRIVIAL), project="a"), bounded=True)
    assert refused.value.retry_after == 120
    assert "'a'" in str(refused.value)
    with pytest.raises(ProjectBusyError):
        executor.check_admission("a")
    executor.check_admission("b")  # another project is not refused
    subscription = [run(executor, RECORDING, "a", input=f"sub-{i}") for i in range(4)]
    await eventually(lambda: executor.slots.waiting("a") == 7, "subscription runs wait too")
    other = await run(executor, TRIVIAL, "b", bounded=True)
    assert other.status == "success"
    gateway.gate.set()
    results = await asyncio.gather(holder, *queued, *subscription)
    assert [r.status for r in results] == ["success"] * 8
    assert gateway.created == [f"direct-{i}" for i in range(3)] + [f"sub-{i}" for i in range(4)]


async def test_slots_hand_over_in_order_and_survive_cancellation() -> None:
    slots = ProjectSlots(limit=1, queue_limit=2, retry_after=5)
    await slots.acquire("p", bounded=True)
    order: list[int] = []

    async def take(number: int) -> None:
        await slots.acquire("p", bounded=False)
        order.append(number)
        slots.release("p")

    first, second, third = (asyncio.ensure_future(take(n)) for n in (1, 2, 3))
    await eventually(lambda: slots.waiting("p") == 3, "three wait")
    second.cancel()
    await eventually(lambda: slots.waiting("p") == 2, "the cancelled one left the queue")
    with pytest.raises(ProjectBusyError):
        await slots.acquire("p", bounded=True)
    slots.release("p")
    await asyncio.gather(first, third)
    assert order == [1, 3]
    assert slots.running("p") == 0 and slots.waiting("p") == 0
