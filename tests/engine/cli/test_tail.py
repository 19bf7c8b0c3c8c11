"""``fhirbots tail`` against a served engine: one line per event of the key's project."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from aiohttp.test_utils import TestServer

from fhirbots.engine.cli.tail import add_commands, format_event, run_tail, tail_url
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import WriteContext
from tests.waiting import eventually


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["tail", *argv])


@pytest.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    engine = Engine(Settings(data_dir=tmp_path))
    await engine.open()
    token = await engine.create_project("p1", "Project one")
    await engine.start_relay()
    server = TestServer(engine.app())
    await server.start_server()
    monkeypatch.setenv("FHIRBOTS_URL", str(server.make_url("/fhir/R4")))
    monkeypatch.setenv("FHIRBOTS_TOKEN", token)
    yield engine
    await server.close()
    await engine.close()


async def test_tail_prints_a_line_per_write_until_interrupted(served: Engine) -> None:
    out, err = io.StringIO(), io.StringIO()
    # The served engine logs to stdout whenever its stages wake; the command writes to the
    # streams it is given.
    with structlog.testing.capture_logs():
        task = asyncio.create_task(run_tail(_args("--type", "Patient"), out, err))
        try:
            await eventually(lambda: "tailing project p1" in err.getvalue(), "the tail ready")
            context = WriteContext(author="test")
            await served.fhir.create("p1", {"resourceType": "Basic", "code": {}}, context)
            written = await served.fhir.create("p1", {"resourceType": "Patient"}, context)
            assert written.stored is not None
            wanted = f"create Patient/{written.stored.id} v1 by test"
            await eventually(lambda: wanted in out.getvalue(), "the Patient's line")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    [line] = out.getvalue().splitlines()  # the Basic was filtered out on the server
    assert "change" in line and line.endswith("]")


async def test_tail_without_a_key_or_with_a_wrong_one_says_so(
    served: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = io.StringIO()
    monkeypatch.delenv("FHIRBOTS_TOKEN")
    assert await run_tail(_args(), io.StringIO(), err) == 2
    assert "FHIRBOTS_TOKEN" in err.getvalue()
    monkeypatch.setenv("FHIRBOTS_TOKEN", "fhb_wrong")
    assert await run_tail(_args("--kinds", "change"), io.StringIO(), err) == 1
    assert "HTTP 401" in err.getvalue()
    assert await run_tail(_args("--kinds", "everything"), io.StringIO(), err) == 1


def test_lines_and_urls() -> None:
    assert tail_url("http://h:8080/fhir/R4") == "http://h:8080/dashboard/api/tail"
    assert tail_url("http://h:8080/") == "http://h:8080/dashboard/api/tail"
    line = format_event(
        {
            "kind": "delivery",
            "time": "2026-01-02T03:04:05.678+00:00",
            "subscription": "s1",
            "attempt": 2,
            "outcome": "retry",
            "status": 502,
            "duration_ms": 12.4,
            "error": "bad gateway",
            "ref": "a1",
        }
    )
    assert (
        "delivery" in line and "Subscription/s1 attempt 2 retry HTTP 502 12 ms bad gateway" in line
    )
    assert line.endswith("[a1]")
