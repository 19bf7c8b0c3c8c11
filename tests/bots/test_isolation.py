"""Isolation between executions and projects: every bot starts from the same state.

A worker serves one project for its whole life; process-wide state that one execution tries to
change (ABC registrations, class and module attributes, builtins, the decimal context, caches)
is either refused or gone before the next execution, in another project or the same one.
"""

from __future__ import annotations

import hashlib
import resource
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from fhirbots.bots._worker import Worker, process_state
from fhirbots.bots.executor import ExecutionRequest, ExecutionResult, ProcessBotExecutor
from fhirbots.bots.policy import SandboxPolicy
from fhirbots.bots.testing import InMemoryFhirGateway, make_bot
from tests.waiting import eventually

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")

IMPORTS = """
import collections
import datetime
import decimal
import functools
import json
import math
import re
import string
import zoneinfo
"""

PROBE = (
    IMPORTS
    + """
def handler(fhir, event):
    context = decimal.getcontext()
    return {
        "chainmap-registry": isinstance(1, collections.ChainMap),
        "template": string.Template("$x").substitute(x=1),
        "delimiter": string.Template.delimiter,
        "separator": json.JSONEncoder.item_separator,
        "dumps": json.dumps({"a": [1, 2]}),
        "pi": math.pi,
        "prec": context.prec,
        "rounding": context.rounding,
        "trap": context.traps[decimal.InvalidOperation],
        "division": str(decimal.Decimal(2) / 3),
        "upper": "abc".upper(),
        "counter": collections.Counter("aab").most_common(1),
        "utc": str(datetime.timezone.utc),
        "zone": str(zoneinfo.ZoneInfo("UTC")),
        "match": bool(re.match("a+", "aaa")),
        "max-date": str(datetime.date.max),
        "partial": functools.partial(max, 1)(2),
        "printed": printed,
        "secrets": event.secrets,
    }
"""
)


def mutation(body: str) -> str:
    return IMPORTS + "def handler(fhir, event):\n" + textwrap.indent(body.strip(), "    ") + "\n"


MUTATIONS = {
    "abc-register-chainmap": "collections.ChainMap.register(int)",
    "abc-register-via-getattr": "getattr(collections.ChainMap, 'register')(int)",
    "template-delimiter": "string.Template.delimiter = '%'",
    "template-subclass": (
        "class T(string.Template):\n    delimiter = '%'\nreturn T('%x').substitute(x=1)"
    ),
    "json-separator": "json.JSONEncoder.item_separator = ';'",
    "module-attribute": "math.pi = 3",
    "module-attribute-delete": "del math.pi",
    "module-function": "json.dumps = None",
    "builtin-method": "str.upper = None",
    "builtin-type-dict": "dict.get = None",
    "decimal-precision": "decimal.getcontext().prec = 2",
    "decimal-rounding": "decimal.getcontext().rounding = decimal.ROUND_DOWN",
    "decimal-traps": "decimal.getcontext().clear_traps()\nreturn str(decimal.Decimal(1) / 0)",
    "decimal-traps-item": "decimal.getcontext().traps[decimal.InvalidOperation] = False",
    "decimal-localcontext": "ctx = decimal.localcontext()\nctx.prec = 3",
    "counter-class-method": "collections.Counter.most_common = None",
    "date-max": "datetime.date.max = datetime.date.min",
    "zoneinfo-cache": "zoneinfo.ZoneInfo.clear_cache()",
    "zoneinfo-instance": "z = zoneinfo.ZoneInfo('UTC')\nz.key = 'Europe/Paris'",
    "re-purge": "re.purge()",
    "total-ordering-stdlib": "functools.total_ordering(string.Template)",
    "partial-func": "p = functools.partial(max, 1)\np.func = min",
    "print-buffer": "print('secret of the previous bot')\nreturn printed",
    "lazy-codec-import": "return 'x'.encode('cp037').hex()",
    "regex-cache-flood": "for i in range(600):\n    re.compile('x' * i)",
}
"""Each kind of process-wide state a bot could try to change, in one or two lines."""


ONE_WORKER = SandboxPolicy(pool_size=1, spare_workers=0)
"""A single worker process, so that a test can tell which one served an execution."""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def executor() -> AsyncIterator[ProcessBotExecutor]:
    policy = SandboxPolicy(pool_size=2, timeout_seconds=5.0, cpu_seconds=2)
    async with ProcessBotExecutor(InMemoryFhirGateway(), policy) as started:
        yield started


async def run(executor: ProcessBotExecutor, source: str, project: str) -> ExecutionResult:
    bot = make_bot(source, secret=["KEY"])
    return await executor.execute(
        ExecutionRequest(bot=bot, project=project, secrets={"KEY": f"key of {project}"})
    )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pristine() -> dict[str, Any]:
    policy = SandboxPolicy(pool_size=1)
    async with ProcessBotExecutor(InMemoryFhirGateway(), policy) as fresh:
        result = await run(fresh, PROBE, "y")
    assert result.status == "success", result.error
    assert result.output["chainmap-registry"] is False
    return dict(result.output)


@MODULE_LOOP
@pytest.mark.parametrize("kind", sorted(MUTATIONS))
async def test_a_mutation_is_not_seen_by_the_next_bot(
    executor: ProcessBotExecutor, pristine: dict[str, Any], kind: str
) -> None:
    tampered = await run(executor, mutation(MUTATIONS[kind]), "x")
    assert tampered.status in ("success", "error"), tampered.error
    other_project = await run(executor, PROBE, "y")
    assert other_project.status == "success", other_project.error
    assert other_project.output == pristine
    same_project = await run(executor, PROBE, "x")
    assert same_project.status == "success", same_project.error
    assert same_project.output == {**pristine, "secrets": {"KEY": "key of x"}}


@MODULE_LOOP
async def test_a_worker_never_serves_a_second_project() -> None:
    of_x = make_bot("def handler(fhir, event):\n    return 'x'\n")
    of_y = make_bot("def handler(fhir, event):\n    return 'y'\n")
    async with ProcessBotExecutor(InMemoryFhirGateway(), ONE_WORKER) as one:
        await one.execute(ExecutionRequest(bot=of_x, project="x"))
        [first] = one.worker_pids
        await one.execute(ExecutionRequest(bot=of_x, project="x"))
        assert one.worker_pids == [first]  # same project: the warm worker, its code cached
        result = await one.execute(ExecutionRequest(bot=of_y, project="y"))
        assert result.output == "y"
        [second] = one.worker_pids
        assert second != first
        assert not Path(f"/proc/{first}").exists()  # noqa: ASYNC240 (killed before its successor started)
        [worker] = one._workers
        assert worker.project == "y"
        assert not worker.knows(hashlib.sha256(of_x.code.encode()).hexdigest())


@MODULE_LOOP
async def test_a_spare_worker_serves_a_new_project_and_another_is_made_ready() -> None:
    of_x = make_bot("def handler(fhir, event):\n    return 'x'\n")
    of_y = make_bot("def handler(fhir, event):\n    return 'y'\n")
    policy = SandboxPolicy(pool_size=1, spare_workers=1)
    async with ProcessBotExecutor(InMemoryFhirGateway(), policy) as executor:
        assert len(executor.worker_pids) == 2  # the pool and its spare
        await executor.execute(ExecutionRequest(bot=of_x, project="x"))
        [served_x] = [w for w in executor._workers if w.project == "x"]
        await executor.execute(ExecutionRequest(bot=of_y, project="y"))
        [served_y] = [w for w in executor._workers if w.project == "y"]
        assert served_y is not served_x  # the spare, not x's worker
        # x's idle worker is retired to make the next spare: a clean worker, never x's.
        await eventually(
            lambda: len(executor.worker_pids) == 2 and served_x.pid not in executor.worker_pids,
            "x's worker replaced by a clean spare",
        )
        assert {w.project for w in executor._workers} == {"y", None}
        for project in ("p1", "p2", "p3", "p4"):  # every new project finds a spare again
            await eventually(
                lambda: any(w.project is None for w in executor._idle), "a clean spare ready"
            )
            result = await executor.execute(ExecutionRequest(bot=of_y, project=project))
            assert result.output == "y"


@MODULE_LOOP
async def test_a_worker_keeps_serving_its_project_while_the_state_holds() -> None:
    async with ProcessBotExecutor(InMemoryFhirGateway(), ONE_WORKER) as one:
        for source in (PROBE, mutation(MUTATIONS["lazy-codec-import"]), PROBE):
            assert (await run(one, source, "x")).status == "success"
        [first] = one.worker_pids
        for kind in ("abc-register-chainmap", "template-delimiter", "decimal-traps"):
            await run(one, mutation(MUTATIONS[kind]), "x")
        assert one.worker_pids == [first]  # refused or reset: nothing to replace it for


@pytest.fixture
def own_limits() -> Iterator[None]:
    """A worker's execute sets CPU and address-space limits on the process it runs in: here,
    the test's own. Put them back, or every later test runs under them (a 512 MiB address
    space leaves no room to start a thread)."""
    kinds = (resource.RLIMIT_CPU, resource.RLIMIT_AS)
    saved = {kind: resource.getrlimit(kind) for kind in kinds}
    yield
    for kind, limits in saved.items():
        resource.setrlimit(kind, limits)


def test_a_worker_whose_process_state_changed_asks_to_be_replaced(own_limits: None) -> None:
    worker = Worker(-1, -1, SandboxPolicy())
    message = {"op": "exec", "digest": "d", "source": PROBE, "event": {"secrets": {}}}
    worker._state = process_state()
    assert worker.execute(message)["recycle"] is False
    worker._state = ("another", "state")  # as after an ABC registration, say
    assert worker.execute(message)["recycle"] is True
