"""``fhirbots executions`` against a served engine (its statistics stage keeps the records)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from aiohttp.test_utils import TestServer

from fhirbots.bots.executor import ExecutionResult
from fhirbots.engine.cli.executions import format_execution, server_root
from fhirbots.engine.cli.main import _parser
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from tests.engine.scenarios.bots import store_bot
from tests.waiting import eventually

OK = "def handler(fhir, event):\n    return event.input\n"
RAISES = "def handler(fhir, event):\n    raise ValueError('no such ward')\n"


async def _run(*argv: str) -> int:
    """Run a command in this process; the served engine's log lines are kept off stdout."""
    args = _parser().parse_args(["executions", *argv])
    with structlog.testing.capture_logs():
        result: int = await args.run(args)
    return result


@pytest.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    engine = Engine(Settings(data_dir=tmp_path))
    await engine.open()
    token = await engine.create_project("p1", "Project one")
    await engine.start_relay()
    await engine.start_stats()
    server = TestServer(engine.app())
    await server.start_server()
    monkeypatch.setenv("FHIRBOTS_URL", str(server.make_url("/fhir/R4")))
    monkeypatch.setenv("FHIRBOTS_TOKEN", token)
    yield engine
    await server.close()
    await engine.close()


async def _execute(engine: Engine, bot_id: str, value: object) -> ExecutionResult:
    loaded = await engine.bots.load("p1", bot_id)
    request = await engine.bots.request(loaded, "p1", value, content_type="application/json")
    return await engine.bots.run(request, trigger="execute", bot_version=loaded.version)


async def test_lists_runs_filtered_by_bot_and_outcome(
    served: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    ok_bot = await store_bot(served, OK, name="ok")
    bad_bot = await store_bot(served, RAISES, name="bad")
    good = await _execute(served, ok_bot, {"n": 1})
    bad = await _execute(served, bad_bot, None)
    assert (good.status, bad.status) == ("success", "error")

    async def recorded() -> bool:
        return len(await served.observatory.executions("p1")) == 2

    await eventually(recorded, "both runs recorded by the statistics stage")

    capsys.readouterr()
    assert await _run() == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert bad.execution_id not in lines[0]  # the listing shows no ids, just the run
    assert f"Bot/{bad_bot}" in lines[0] and "error" in lines[0]
    assert "ValueError: no such ward" in lines[0]
    assert f"Bot/{ok_bot}" in lines[1] and " ok " in lines[1] and " ms" in lines[1]

    assert await _run("--outcome", "error") == 0
    [line] = capsys.readouterr().out.splitlines()
    assert f"Bot/{bad_bot}" in line

    assert await _run("--bot", ok_bot, "--json") == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["id"] == good.execution_id and row["status"] == "success"

    assert await _run("--limit", "1") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1

    assert await _run("--outcome", "timeout") == 0
    assert capsys.readouterr().out.strip() == "no executions"


async def test_another_projects_key_lists_nothing_and_a_bad_key_fails(
    served: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bot_id = await store_bot(served, OK)
    await _execute(served, bot_id, 1)

    async def recorded() -> bool:
        return len(await served.observatory.executions("p1")) == 1

    await eventually(recorded, "the run recorded")
    other = await served.create_project("p2", "Project two")
    monkeypatch.setenv("FHIRBOTS_TOKEN", other)
    capsys.readouterr()
    assert await _run() == 0
    assert capsys.readouterr().out.strip() == "no executions"
    monkeypatch.setenv("FHIRBOTS_TOKEN", "fhb_wrong")
    assert await _run() == 1
    assert "401" in capsys.readouterr().err


def test_format_and_root() -> None:
    line = format_execution(
        {
            "started": "2024-05-01T12:00:03.412345Z",
            "bot": "Bot/b1",
            "outcome": "timeout",
            "duration_ms": 5003.14,
            "error": "Traceback:\n  line 3\nTimeout: took longer than 5 s\n",
        }
    )
    assert (
        line
        == "2024-05-01 12:00:03.412  Bot/b1  timeout      5003.1 ms  Timeout: took longer than 5 s"
    )
    assert server_root("http://h:8080/fhir/R4/") == "http://h:8080"
    assert server_root("http://h:8080") == "http://h:8080"
