"""When a bot execution ends, its FHIR calls end with it: nothing commits after the timeout, and
every entry of a Bundle counts against the cap on FHIR calls. On SQLite (writer process) and
PostgreSQL, through the engine's own gateway and services."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from fhirbots.bots.errors import FhirGatewayError
from fhirbots.bots.executor import ExecutionRequest, ProcessBotExecutor
from fhirbots.bots.gateway import CallContext
from fhirbots.bots.policy import SandboxPolicy
from fhirbots.bots.testing import make_bot
from fhirbots.engine.automation.engine_gateway import EngineFhirGateway
from fhirbots.engine.errors import DeadlinePassed
from fhirbots.engine.runtime import Engine
from fhirbots.engine.storage.model import CreateOp, WriteContext
from tests.engine.scenarios.bots import PROJECT

BIG_TRANSACTION = """
import datetime

def handler(fhir, event):
    # Most of the 1 s timeout goes by before the transaction starts, so that it is still
    # running when the timeout hits (its 8,000 entries take seconds to validate and write).
    start = datetime.datetime.now()
    while (datetime.datetime.now() - start).total_seconds() < 0.8:
        pass
    entries = [
        {"request": {"method": "POST", "url": "Basic"},
         "resource": {"resourceType": "Basic", "code": {"text": "entry %d" % i}}}
        for i in range(event.input)
    ]
    fhir.transaction({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return "committed"
"""

BATCH_OVER_THE_CAP = """
def handler(fhir, event):
    for i in range(3):
        fhir.create({"resourceType": "Basic", "code": {"text": "single %d" % i}})
    entries = [
        {"request": {"method": "POST", "url": "Basic"},
         "resource": {"resourceType": "Basic", "code": {"text": "batch %d" % i}}}
        for i in range(8)
    ]
    try:
        fhir.transaction({"resourceType": "Bundle", "type": "batch", "entry": entries})
    except FhirError as refused:
        return [refused.status, str(refused)]
    return "not refused"
"""


def basic(number: int) -> dict[str, Any]:
    return {"resourceType": "Basic", "code": {"text": f"entry {number}"}}


def gateway(engine: Engine) -> EngineFhirGateway:
    return EngineFhirGateway(engine.fhir, engine.search, engine._get_url, "http://h/fhir/R4")


async def basics(engine: Engine) -> int:
    """Basic resources stored in the project, once every write handed over has settled."""
    # A write queued behind anything still in flight: when it is done, so is all before it.
    await engine.fhir.write(
        PROJECT,
        [CreateOp({"resourceType": "Patient", "active": True})],
        WriteContext(author="test"),
    )
    return (await engine.storage.count_by_type(PROJECT)).get("Basic", 0)


@pytest_asyncio.fixture
async def executor(engine: Engine) -> AsyncIterator[ProcessBotExecutor]:
    policy = SandboxPolicy(pool_size=1, timeout_seconds=1.0, cpu_seconds=5, max_fhir_calls=10)
    async with ProcessBotExecutor(gateway(engine), policy) as started:
        yield started


async def test_a_transaction_outliving_the_timeout_commits_nothing(
    engine: Engine, executor: ProcessBotExecutor
) -> None:
    bot = make_bot(BIG_TRANSACTION, access=None)
    policy = SandboxPolicy(pool_size=1, timeout_seconds=1.0, cpu_seconds=5, max_fhir_calls=30_000)
    async with ProcessBotExecutor(gateway(engine), policy) as big:
        result = await big.execute(ExecutionRequest(bot=bot, input=8_000, project=PROJECT))
    assert result.status == "timeout", (result.status, result.error, result.output)
    assert result.fhir_calls == 8_000
    assert await basics(engine) == 0


async def test_a_write_past_its_deadline_rolls_back(engine: Engine) -> None:
    late = CallContext(
        project=PROJECT,
        bot="Bot/b1",
        execution_id="x1",
        author="Bot/b1",
        deadline=time.monotonic() - 0.001,
    )
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "POST", "url": "Basic"}, "resource": basic(i)} for i in range(5)
        ],
    }
    with pytest.raises(FhirGatewayError) as refused:
        await gateway(engine).transaction(late, bundle)
    assert refused.value.status == DeadlinePassed.status
    with pytest.raises(FhirGatewayError):
        await gateway(engine).create(late, basic(5))
    assert await basics(engine) == 0
    on_time = CallContext(
        project=PROJECT,
        bot="Bot/b1",
        execution_id="x2",
        author="Bot/b1",
        deadline=time.monotonic() + 60,
    )
    await gateway(engine).transaction(on_time, bundle)
    assert await basics(engine) == 5


async def test_bundle_entries_count_against_the_call_cap(
    engine: Engine, executor: ProcessBotExecutor
) -> None:
    bot = make_bot(BATCH_OVER_THE_CAP, access=None)
    result = await executor.execute(ExecutionRequest(bot=bot, project=PROJECT))
    assert result.status == "success", result.error
    status, message = result.output
    assert status == 429
    assert "counts 8" in message and "only 7 remain" in message and "max_fhir_calls" in message
    assert result.fhir_calls == 3
    assert await basics(engine) == 3
