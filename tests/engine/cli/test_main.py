"""The CLI against a real ``fhirbots serve`` process: bootstrap, and loading every sample bundle."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirbots.engine.cli.main import main
from fhirbots.engine.storage.sqlite import SqliteStorage
from tests.engine.scenarios.process import serve_process

pytestmark = pytest.mark.integration


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    # The HL7 examples the load test sends one by one refer to resources that are not among
    # them (Practitioner/example, ...): references are taken as they are.
    async with serve_process(tmp_path, FHIRBOTS_REFERENTIAL_INTEGRITY_ON_WRITE="false") as served:
        yield served.base, tmp_path
    assert b"admin-token" in b"".join(served.output)


def test_serve_writes_admin_token_owner_only(server: tuple[str, Path]) -> None:
    _, data_dir = server
    token = data_dir / "admin-token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text().startswith("fhb_")


async def test_load_every_sample_bundle(server: tuple[str, Path], shared_dir: Path) -> None:
    url, data_dir = server
    samples = shared_dir / "fhir-samples"
    env = {**os.environ, "FHIRBOTS_TOKEN": (data_dir / "admin-token").read_text().strip()}
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "fhirbots.engine.cli.main",
            "load",
            str(samples),
            "--url",
            url,
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    expected: Counter[str] = Counter()
    for path in samples.rglob("*.json"):
        doc = json.loads(path.read_text())
        if doc.get("resourceType") == "Bundle":
            expected.update(e["resource"]["resourceType"] for e in doc["entry"])
        else:
            expected[doc["resourceType"]] += 1
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{sum(expected.values())} resources" in done.stdout
    storage = SqliteStorage(data_dir / "fhirbots.db")
    await storage.open()
    try:
        counts = await storage.count_by_type("default")
        assert {t: counts.get(t, 0) for t in expected} == dict(expected)
        # The HL7 examples hold two Subscriptions the running engine acts on; it may record
        # AuditEvents about them (their endpoints are refused) while the test runs.
        assert set(counts) - set(expected) <= {"AuditEvent"}
    finally:
        await storage.close()


@pytest.mark.parametrize("command", [["serve"], ["worker", "bots"]])
@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "FHIRBOTS_BOT_TIMEOUT",
            "-1",
            "SandboxPolicy.timeout_seconds must be positive, got -1.0 "
            "(set by FHIRBOTS_BOT_TIMEOUT)",
        ),
        ("FHIRBOTS_BOT_WORKERS", "two", "FHIRBOTS_BOT_WORKERS must be a whole number, not 'two'"),
    ],
)
def test_server_commands_refuse_an_invalid_bot_limit_by_name(
    command: list[str],
    variable: str,
    value: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    assert main([*command, "--data-dir", str(tmp_path / "data")]) == 2
    assert capsys.readouterr().err == f"fhirbots: {message}\n"
    assert not (tmp_path / "data").exists()
