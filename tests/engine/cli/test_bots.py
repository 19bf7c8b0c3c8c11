"""``fhirbots bot deploy|run`` against a served engine and the embedded one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhirbots.engine.automation.tags import BOT_TAG_SYSTEM
from fhirbots.engine.cli.bots import read_input_file
from fhirbots.engine.cli.main import _parser
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from tests.engine.conftest import Api

WRITER = """
from fhirbots import logger

def handler(fhir, event):
    logger.info("writing %s", event.input["family"])
    patient = fhir.create({"resourceType": "Patient", "name": [{"family": event.input["family"]}]})
    return {"id": patient["id"], "tags": patient["meta"].get("tag", [])}
"""


WRAPPER = """
import textwrap

def handler(fhir, event):
    return {"text": textwrap.dedent("  a")}
"""
"""Imports a module outside the default allow-list."""


def args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(list(argv))


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def json_output(out: str) -> Any:
    """The output document (indented JSON from a line ``{``), after any log lines."""
    lines = out.splitlines()
    return orjson.loads("\n".join(lines[lines.index("{") :]))


async def run(namespace: argparse.Namespace) -> int:
    result: int = await namespace.run(namespace)
    return result


@pytest.fixture(autouse=True)
def keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bot run`` configures logging for a terminal; tests keep the session's set-up (a
    logger bound to a captured, later closed, stderr would break every later test)."""
    monkeypatch.setattr("fhirbots.engine.cli.bots.configure_logging", lambda *_a, **_k: None)


@pytest.fixture
def url(api: Api, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FHIRBOTS_TOKEN", api.token)
    return str(api.client.make_url("/fhir/R4"))


async def test_deploy_creates_then_updates_by_name(
    api: Api, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path, "bot.py", "def handler(fhir, event):\n    return 1\n")
    assert await run(args("bot", "deploy", source, "--name", "adder", "--url", url)) == 0
    first = capsys.readouterr().out.strip().splitlines()
    assert first[0] == "created adder (version 1)"
    reference = first[-1]
    assert reference.startswith("Bot/")
    write(tmp_path, "bot.py", "def handler(fhir, event):\n    return 2\n")
    await run(args("bot", "deploy", source, "--name", "adder", "--url", url))
    second = capsys.readouterr().out.strip().splitlines()
    assert second == ["deployed adder (version 2)", reference]
    resp = await api.client.get(f"/fhir/R4/{reference}", headers=api.headers())
    assert "return 2" in (await resp.json())["code"]
    await run(args("bot", "deploy", source, "--name", "adder", "--url", url))
    third = capsys.readouterr().out.strip().splitlines()
    assert third == [
        "unchanged adder (version 2): the source is already deployed",
        reference,
    ]
    history = await api.client.get(f"/fhir/R4/{reference}/_history", headers=api.headers())
    assert (await history.json())["total"] == 2


async def test_deploy_prints_refusals_with_line_and_column(
    api: Api, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path, "bad.py", "def handler(fhir, event):\n    return open('x')\n")
    assert await run(args("bot", "deploy", source, "--name", "bad", "--url", url)) == 2
    assert f"{source}:2:12: " in capsys.readouterr().err


async def test_run_against_a_server_writes_there_as_the_key(
    api: Api, url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path, "writer.py", WRITER)
    given = write(tmp_path, "in.json", '{"family": "Remote"}')
    assert await run(args("bot", "run", source, "--input", given, "--url", url)) == 0
    captured = capsys.readouterr()
    output = json_output(captured.out)
    assert "writing Remote" in captured.err
    resp = await api.client.get(f"/fhir/R4/Patient/{output['id']}", headers=api.headers())
    stored: dict[str, Any] = await resp.json()
    assert stored["name"][0]["family"] == "Remote"
    # It wrote as its key: only the engine's own bots' writes carry the bot tags.
    assert not any(t["system"] == BOT_TAG_SYSTEM for t in stored["meta"].get("tag", []))


async def test_run_embedded_writes_to_the_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path, "writer.py", WRITER)
    given = write(tmp_path, "in.json", '{"family": "Local"}')
    data = tmp_path / "data"
    assert await run(args("bot", "run", source, "--input", given, "--data-dir", str(data))) == 0
    output = json_output(capsys.readouterr().out)
    engine = Engine(Settings(data_dir=data))
    await engine.open()
    try:
        stored = await engine.fhir.read("default", "Patient", output["id"])
        assert stored.content is not None
        assert stored.content["name"][0]["family"] == "Local"
    finally:
        await engine.close()


async def test_run_reports_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write(tmp_path, "fail.py", "def handler(fhir, event):\n    return 1 / 0\n")
    namespace = args("bot", "run", source, "--data-dir", str(tmp_path / "data"))
    assert await run(namespace) == 1
    assert "ZeroDivisionError" in capsys.readouterr().err


async def test_run_uses_the_bot_limits_of_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path, "wrap.py", WRAPPER)
    namespace = args("bot", "run", source, "--data-dir", str(tmp_path / "data"))
    assert await run(namespace) == 2
    assert "SandboxPolicy.with_modules('textwrap')" in capsys.readouterr().err
    monkeypatch.setenv("FHIRBOTS_BOT_ALLOWED_MODULES", "json,textwrap")
    assert await run(namespace) == 0
    assert json_output(capsys.readouterr().out) == {"text": "a"}


async def test_run_refuses_an_invalid_bot_limit_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write(tmp_path, "ok.py", "def handler(fhir, event):\n    return 1\n")
    monkeypatch.setenv("FHIRBOTS_BOT_MEMORY_MB", "32")
    assert await run(args("bot", "run", source, "--data-dir", str(tmp_path / "data"))) == 2
    err = capsys.readouterr().err
    assert "SandboxPolicy.memory_bytes must be at least 64 MiB" in err
    assert "FHIRBOTS_BOT_MEMORY_MB" in err
    assert not (tmp_path / "data").exists()


def test_input_files_are_json_hl7_or_text(tmp_path: Path) -> None:
    resource = tmp_path / "r.json"
    resource.write_text('{"resourceType": "Patient"}')
    assert read_input_file(resource) == ({"resourceType": "Patient"}, "application/fhir+json")
    hl7 = tmp_path / "adt.hl7"
    hl7.write_text("MSH|^~\\&|A\nPID|1\n")
    assert read_input_file(hl7) == ("MSH|^~\\&|A\rPID|1", "x-application/hl7-v2+er7")
    text = tmp_path / "note.txt"
    text.write_text("hello")
    assert read_input_file(text) == ("hello", "text/plain")
    assert read_input_file(text, "text/markdown") == ("hello", "text/markdown")
