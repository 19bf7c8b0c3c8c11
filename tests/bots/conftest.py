"""Scenario helpers for bot tests: a shared executor with small limits, and a healthy-bot probe."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from fhirbots.bots.executor import ExecutionRequest, ProcessBotExecutor
from fhirbots.bots.policy import MIB, SandboxPolicy
from fhirbots.bots.testing import BotHarness, InMemoryFhirGateway, make_bot

TEST_POLICY = SandboxPolicy(
    pool_size=2,
    timeout_seconds=2.0,
    cpu_seconds=1,
    memory_bytes=256 * MIB,
    max_output_bytes=256 * 1024,
    max_log_bytes=8 * 1024,
)
"""Small limits so that runaway bots are stopped within a couple of seconds."""

HEALTHY_SOURCE = """
import math
def handler(fhir, event):
    return {"double": event.input * 2, "pi": round(math.pi, 2)}
"""


async def assert_healthy(executor: ProcessBotExecutor) -> None:
    """A normal execution right after whatever happened before still succeeds."""
    result = await executor.execute(ExecutionRequest(bot=make_bot(HEALTHY_SOURCE), input=21))
    assert result.status == "success", result.error
    assert result.output == {"double": 42, "pi": 3.14}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def harness() -> AsyncIterator[BotHarness]:
    """One two-worker harness per test module (workers are replaced as tests kill them)."""
    async with BotHarness(InMemoryFhirGateway(), TEST_POLICY) as started:
        yield started
