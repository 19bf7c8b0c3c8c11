"""The worker-pool executor against real worker processes and an in-memory gateway."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from fhirbots.bots.errors import ExecutorError
from fhirbots.bots.executor import ExecutionRequest, ExecutionResult, ProcessBotExecutor
from fhirbots.bots.gateway import CallContext
from fhirbots.bots.policy import SandboxPolicy
from fhirbots.bots.testing import InMemoryFhirGateway, make_bot
from fhirbots.schemas.events import CausationLink, ChangeEvent
from tests.bots.conftest import TEST_POLICY, assert_healthy
from tests.waiting import DEADLINE, eventually

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


class SlowGateway(InMemoryFhirGateway):
    """Reads of ``Slow/*`` hang; reads of ``Broken/*`` fail with a gateway bug."""

    def __init__(self) -> None:
        super().__init__([{"resourceType": "Patient", "id": "p1", "gender": "female"}])
        self.reading = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def read(self, ctx: CallContext, resource_type: str, resource_id: str) -> dict[str, Any]:
        if resource_type == "Slow":
            self.reading.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if resource_type == "Broken":
            raise RuntimeError("database on fire")
        return await super().read(ctx, resource_type, resource_id)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gateway() -> SlowGateway:
    return SlowGateway()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def executor(gateway: SlowGateway) -> AsyncIterator[ProcessBotExecutor]:
    async with ProcessBotExecutor(gateway, TEST_POLICY) as started:
        yield started


async def run(executor: ProcessBotExecutor, source: str, **fields: Any) -> ExecutionResult:
    bot_fields = {
        k: fields.pop(k)
        for k in ("access", "secret", "timeout", "memory_limit", "run_as")
        if k in fields
    }
    return await executor.execute(ExecutionRequest(bot=make_bot(source, **bot_fields), **fields))


@MODULE_LOOP
async def test_success_returns_output_logs_and_counts(executor: ProcessBotExecutor) -> None:
    source = """
def handler(fhir, event):
    patient = fhir.read("Patient", "p1")
    print("gender", patient["gender"])
    logger.warning("input was %s", event.input)
    return {"gender": patient["gender"], "type": event.content_type}
"""
    result = await run(executor, source, input=7, content_type="text/plain")
    assert result.status == "success"
    assert result.output == {"gender": "female", "type": "text/plain"}
    assert result.logs == "gender female\nWARNING input was 7\n"
    assert result.fhir_calls == 1
    assert result.duration_ms > 0
    assert result.ok


@MODULE_LOOP
async def test_bot_exception_is_an_error_result_with_bot_lines_only(
    executor: ProcessBotExecutor,
) -> None:
    source = """
def helper(x):
    return x["missing"]

def handler(fhir, event):
    return helper({})
"""
    result = await run(executor, source)
    assert result.status == "error"
    assert result.error is not None
    assert "line 6, in handler" in result.error
    assert 'return x["missing"]' in result.error
    assert result.error.endswith("KeyError: 'missing'")
    assert "_worker.py" not in result.error


@MODULE_LOOP
async def test_access_scopes_are_enforced_before_the_gateway(
    executor: ProcessBotExecutor, gateway: SlowGateway
) -> None:
    source = """
def handler(fhir, event):
    fhir.read("Patient", "p1")
    try:
        fhir.create({"resourceType": "Flag", "status": "active"})
    except FhirError as error:
        return [error.status, error.outcome["issue"][0]["code"], str(error)]
"""
    before = len(gateway.calls)
    result = await run(
        executor, source, access=[{"resourceType": "Patient", "interaction": ["read"]}]
    )
    assert result.status == "success", result.error
    status, code, message = result.output
    assert (status, code) == (403, "forbidden")
    assert '"resourceType": "Flag", "interaction": ["create"]' in message
    assert [method for method, _ in gateway.calls[before:]] == ["read"]


@MODULE_LOOP
async def test_transactions_are_checked_entry_by_entry(executor: ProcessBotExecutor) -> None:
    source = """
def handler(fhir, event):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}},
        {"request": {"method": "DELETE", "url": "Patient/p1"}},
    ]}
    try:
        fhir.transaction(bundle)
    except FhirError as error:
        return str(error)
"""
    scopes = [{"resourceType": "Patient", "interaction": ["create", "read"]}]
    result = await run(executor, source, access=scopes)
    assert "may not delete Patient" in result.output


@MODULE_LOOP
async def test_call_context_carries_identity_and_idempotency(
    executor: ProcessBotExecutor, gateway: SlowGateway
) -> None:
    source = """
def handler(fhir, event):
    fhir.read("Patient", "p1")
    return [event.idempotency_key, event.trace_id, event.requester, event.bot["name"]]
"""
    request_fields = {
        "idempotency_key": "sub-1/42",
        "trace_id": "00-abc-def-01",
        "requester": "Practitioner/7",
        "project": "proj-a",
    }
    for run_as, author in (("bot", None), ("author", "Practitioner/7")):
        result = await run(executor, source, run_as=run_as, **request_fields)
        assert result.output == ["sub-1/42", "00-abc-def-01", "Practitioner/7", "test-bot"]
        _, ctx = gateway.calls[-1]
        assert ctx.idempotency_key == "sub-1/42"
        assert ctx.project == "proj-a"
        assert ctx.execution_id == result.execution_id
        assert ctx.author == (author or ctx.bot)
        assert ctx.causation[-1].execution == result.execution_id


@MODULE_LOOP
async def test_wall_clock_timeout_kills_and_replaces_the_worker(
    executor: ProcessBotExecutor,
) -> None:
    before = set(executor.worker_pids)
    source = 'def handler(fhir, event):\n    return fhir.read("Slow", "1")\n'
    result = await run(executor, source, timeout=0.5)
    assert result.status == "timeout"
    assert "0.5 s timeout" in (result.error or "")
    # The slow read would have returned after a minute: the run ended because of the timeout.
    assert result.duration_ms >= 450
    await assert_healthy(executor)
    await assert_healthy(executor)
    assert set(executor.worker_pids) != before


@MODULE_LOOP
async def test_cancelled_execution_discards_its_worker(
    executor: ProcessBotExecutor, gateway: SlowGateway
) -> None:
    gateway.reading.clear()
    source = 'def handler(fhir, event):\n    return fhir.read("Slow", "1")\n'
    task = asyncio.create_task(run(executor, source))
    await eventually(gateway.reading.wait, "the bot to call the slow read")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_healthy(executor)
    await assert_healthy(executor)


@MODULE_LOOP
async def test_worker_death_during_execution_is_a_killed_result(gateway: SlowGateway) -> None:
    # SIGKILL sent to the worker while the bot computes. Its limits lie beyond the test's
    # deadline, so the worker ends by the kill, however slowly a loaded machine runs it.
    limit = int(DEADLINE) * 10
    policy = TEST_POLICY.with_pool_size(1).with_timeout(limit).with_cpu_seconds(limit)
    policy = policy.with_spare_workers(0)
    source = "def handler(fhir, event):\n    while True:\n        pass\n"
    async with ProcessBotExecutor(gateway, policy) as executor:
        (pid,) = executor.worker_pids
        idle = _cpu_ticks(pid)
        task = asyncio.create_task(run(executor, source))

        def spinning() -> bool:
            assert not task.done(), "the execution ended before its worker was killed"
            return _cpu_ticks(pid) > idle + 2

        await eventually(spinning, "the worker to run the endless loop")
        os.kill(pid, signal.SIGKILL)
        result = await task
        assert result.status == "killed"
        assert "SIGKILL" in (result.error or "")
        await assert_healthy(executor)


@MODULE_LOOP
async def test_worker_death_during_a_fhir_call_cancels_the_call(gateway: SlowGateway) -> None:
    gateway.reading.clear()
    gateway.cancelled.clear()
    policy = TEST_POLICY.with_pool_size(1).with_timeout(int(DEADLINE) * 10).with_spare_workers(0)
    source = "def handler(fhir, event):\n    return fhir.read('Slow', '1')\n"
    async with ProcessBotExecutor(gateway, policy) as executor:
        (pid,) = executor.worker_pids
        task = asyncio.create_task(run(executor, source))
        await eventually(gateway.reading.is_set, "the bot's FHIR call to be under way")
        os.kill(pid, signal.SIGKILL)
        result = await task
        assert result.status == "killed"
        assert gateway.cancelled.is_set()  # the call ended with the execution
        await assert_healthy(executor)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@MODULE_LOOP
async def test_gateway_bug_is_an_internal_error_the_bot_sees(executor: ProcessBotExecutor) -> None:
    source = """
def handler(fhir, event):
    try:
        fhir.read("Broken", "1")
    except FhirError as error:
        return [error.status, str(error)]
"""
    result = await run(executor, source)
    assert result.output == [500, "internal error performing read: RuntimeError"]


@MODULE_LOOP
async def test_unserialisable_values_are_error_results(executor: ProcessBotExecutor) -> None:
    returns_object = "def handler(fhir, event):\n    return iter([])\n"
    result = await run(executor, returns_object)
    assert result.status == "error"
    assert "not JSON-serialisable" in (result.error or "")
    bad_input = await run(executor, "def handler(fhir, event):\n    return 1\n", input=object())
    assert bad_input.status == "error"
    assert "input is not JSON-serialisable" in (bad_input.error or "")
    await assert_healthy(executor)


@MODULE_LOOP
async def test_bot_memory_limit_is_lower_than_the_policy(executor: ProcessBotExecutor) -> None:
    source = "def handler(fhir, event):\n    return len(bytearray(100 * 1024 * 1024))\n"
    assert (await run(executor, source)).output == 100 * 1024 * 1024
    limited = await run(executor, source, memory_limit=64)
    assert limited.status == "memory"
    await assert_healthy(executor)


@MODULE_LOOP
async def test_fhir_call_budget(gateway: SlowGateway) -> None:
    policy = SandboxPolicy(pool_size=1, max_fhir_calls=3)
    source = """
def handler(fhir, event):
    done = 0
    try:
        for i in range(10):
            fhir.read("Patient", "p1")
            done += 1
    except FhirError as error:
        return [done, error.status]
"""
    async with ProcessBotExecutor(gateway, policy) as executor:
        result = await run(executor, source)
    assert result.output == [3, 429]


@MODULE_LOOP
async def test_code_is_sent_once_and_resent_when_the_worker_asks(gateway: SlowGateway) -> None:
    policy = SandboxPolicy(pool_size=1, code_cache_size=1, spare_workers=0)
    first = make_bot("def handler(fhir, event):\n    return 'first'\n")
    second = make_bot("def handler(fhir, event):\n    return 'second'\n")
    async with ProcessBotExecutor(gateway, policy) as executor:
        for bot, expected in ((first, "first"), (second, "second")) * 2:
            result = await executor.execute(ExecutionRequest(bot=bot))
            assert result.output == expected
        # Pretend the worker still holds `first` although its cache of one now holds `second`.
        (worker,) = executor._workers
        worker.remember(hashlib.sha256(first.code.encode()).hexdigest())
        again = await executor.execute(ExecutionRequest(bot=first))
        assert again.output == "first"


@MODULE_LOOP
async def test_parallel_executions_use_the_whole_pool(executor: ProcessBotExecutor) -> None:
    # Two projects: each may use its share, half the pool.
    source = "def handler(fhir, event):\n    return sum(range(200000)) + event.input\n"
    results = await asyncio.gather(
        *(run(executor, source, input=i, project=f"p{i % 2}") for i in range(20))
    )
    assert [r.output for r in results] == [19999900000 + i for i in range(20)]


@MODULE_LOOP
async def test_workers_are_recycled_after_their_quota(gateway: SlowGateway) -> None:
    policy = SandboxPolicy(pool_size=1, max_executions_per_worker=2)
    async with ProcessBotExecutor(gateway, policy) as executor:
        seen = set()
        for _ in range(5):
            seen.update(executor.worker_pids)
            await assert_healthy(executor)
        assert len(seen) >= 2


@MODULE_LOOP
async def test_closed_executor_refuses(gateway: SlowGateway) -> None:
    executor = ProcessBotExecutor(gateway, SandboxPolicy(pool_size=1))
    await executor.start()
    pids = executor.worker_pids
    await executor.close()
    assert executor.worker_pids == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(ExecutorError):
        await run(executor, "def handler(fhir, event):\n    return 1\n")


@pytest.mark.parametrize(
    ("trigger", "status", "output", "expected"),
    [
        ("always", "success", None, True),
        ("never", "error", None, False),
        ("on-error", "success", 1, False),
        ("on-error", "timeout", None, True),
        ("on-output", "success", None, False),
        ("on-output", "success", {"a": 1}, True),
    ],
)
def test_needs_audit(trigger: Any, status: Any, output: Any, expected: bool) -> None:
    result = ExecutionResult(status=status, execution_id="x", output=output)
    assert result.needs_audit(trigger) is expected


@MODULE_LOOP
async def test_oversized_messages_are_refused_not_fatal() -> None:
    big = {"resourceType": "Patient", "id": "big", "text": {"div": "x" * 200_000}}
    gateway = InMemoryFhirGateway([big])
    policy = SandboxPolicy(
        pool_size=1, max_message_bytes=100_000, max_output_bytes=50_000, max_log_bytes=8_000
    )
    source = """
def handler(fhir, event):
    try:
        fhir.read("Patient", "big")
    except FhirError as error:
        return [error.status, str(error)]
"""
    async with ProcessBotExecutor(gateway, policy) as executor:
        result = await run(executor, source)
        status, message = result.output
        assert status == 413
        assert "cannot be delivered" in message
        assert "max_message_bytes" in message
        too_big = await run(executor, source, input="y" * 200_000)
        assert too_big.status == "error"
        assert "input is too large" in (too_big.error or "")
        big_request = await run(
            executor,
            "def handler(fhir, event):\n"
            "    try:\n"
            "        fhir.create({'resourceType': 'Basic', 'text': 'z' * 200000})\n"
            "    except FhirError as error:\n"
            "        return error.status\n",
        )
        assert big_request.output == 413
        await assert_healthy(executor)


def test_request_from_change_carries_trace_author_and_causation() -> None:
    link = CausationLink(bot="Bot/other", execution="x1")
    change = ChangeEvent(
        event_id="ev-1",
        project="proj",
        interaction="update",
        resource_type="Observation",
        resource_id="o1",
        version_id="2",
        resource={"resourceType": "Observation", "id": "o1"},
        previous={"resourceType": "Observation", "id": "o1", "status": "preliminary"},
        time=datetime(2024, 1, 1, tzinfo=UTC),
        author="Practitioner/7",
        traceparent="00-abc-def-01",
        causation=(link,),
    )
    bot = make_bot("def handler(fhir, event):\n    pass\n", id="flagger")
    request = ExecutionRequest.from_change(bot, change, secrets={"A": "1"})
    assert request.input == change.resource
    assert (request.project, request.requester, request.trace_id) == (
        "proj",
        "Practitioner/7",
        "00-abc-def-01",
    )
    assert request.idempotency_key == "ev-1"
    assert not request.loops
    ctx = request.call_context()
    assert ctx.causation == (link, CausationLink(bot="Bot/flagger", execution=request.execution_id))
    deleted = change.model_copy(update={"interaction": "delete", "resource": None})
    assert ExecutionRequest.from_change(bot, deleted).input == change.previous
    looping = change.model_copy(update={"causation": (link, ctx.causation[-1])})
    assert ExecutionRequest.from_change(bot, looping, idempotency_key="s/9").loops


@MODULE_LOOP
async def test_executions_are_counted_in_metrics(executor: ProcessBotExecutor) -> None:
    def count(status: str) -> float:
        value = REGISTRY.get_sample_value("fhirbots_bot_executions_total", {"status": status})
        return value or 0.0

    before = count("success"), count("error")
    await run(executor, "def handler(fhir, event):\n    return 1\n")
    await run(executor, "def handler(fhir, event):\n    return 1 / 0\n")
    assert (count("success"), count("error")) == (before[0] + 1, before[1] + 1)


@MODULE_LOOP
async def test_cpu_limit_stops_a_busy_bot_before_the_wall_clock(gateway: SlowGateway) -> None:
    policy = SandboxPolicy(pool_size=1, timeout_seconds=20, cpu_seconds=1)
    async with ProcessBotExecutor(gateway, policy) as executor:
        result = await run(executor, "def handler(fhir, event):\n    while True:\n        pass\n")
        assert result.status == "timeout"
        assert "s of CPU time" in (result.error or "")
        assert result.duration_ms < 15_000
        await assert_healthy(executor)


@MODULE_LOOP
async def test_workers_start_under_a_policy_without_the_warm_up_modules(
    gateway: SlowGateway,
) -> None:
    policy = SandboxPolicy(pool_size=1, allowed_modules=frozenset({"math"}))
    async with ProcessBotExecutor(gateway, policy) as executor:
        allowed = await run(
            executor, "import math\ndef handler(fhir, event):\n    return math.floor(2.5)\n"
        )
        refused = await run(executor, "import json\ndef handler(fhir, event):\n    return 1\n")
    assert (allowed.status, allowed.output) == ("success", 2)
    assert refused.status == "error"
    assert "SandboxPolicy.with_modules('json')" in (refused.error or "")
