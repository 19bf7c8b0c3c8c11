"""The CLI against a real ``fhirbots serve`` process: bootstrap, and loading every sample bundle."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirbots.engine.cli.main import main
from fhirbots.engine.storage.sqlite import SqliteStorage
from tests.conftest import child_env
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    port = _free_port()
    env = {k: v for k, v in child_env().items() if not k.startswith("FHIRBOTS_")}
    # The HL7 examples the load test sends one by one refer to resources that are not among
    # them (Practitioner/example, ...): references are taken as they are.
    env["FHIRBOTS_REFERENTIAL_INTEGRITY_ON_WRITE"] = "false"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fhirbots.engine.cli.main",
        "serve",
        "--data-dir",
        str(tmp_path),
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            assert proc.returncode is None, "serve exited"
            return False

    try:
        await eventually(lambda: asyncio.to_thread(healthy), "serve to answer /healthz")
        yield f"http://127.0.0.1:{port}/fhir/R4", tmp_path
    finally:
        if proc.returncode is None:
            proc.terminate()
        out, _ = await proc.communicate()
        assert proc.returncode == 0
        assert b"admin-token" in out


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
