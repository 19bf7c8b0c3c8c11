"""``fhirbots migrate`` and the servers in distributed mode, as real processes on a database of
their own: a worker refuses an empty database naming ``fhirbots migrate``, the command makes
every store's tables (and does nothing the second time), then ``serve`` starts, answers its
probes on the API and the management port, and drains on SIGTERM with status 0."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fhirbots.engine.cli.main import SCHEMA_STATUS
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.storage.sql import history as datastore_history
from tests.conftest import child_env, scratch_database
from tests.engine.scenarios.process import free_port
from tests.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def _env(dsn: str, data_dir: Path) -> dict[str, str]:
    clean = {k: v for k, v in child_env().items() if not k.startswith("FHIRBOTS_")}
    return {
        **clean,
        "FHIRBOTS_DATABASE_URL": dsn,
        "FHIRBOTS_DATA_DIR": str(data_dir),
        "FHIRBOTS_LOG_LEVEL": "WARNING",
    }


async def _fhirbots(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "fhirbots.engine.cli.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


async def test_distributed_servers_need_fhirbots_migrate(tmp_path: Path) -> None:
    async with scratch_database() as dsn:
        env = _env(dsn, tmp_path)
        refused = await _fhirbots(env, "worker", "relay")
        assert refused.returncode == SCHEMA_STATUS, refused.stderr
        assert "schema is missing" in refused.stderr
        assert "run `fhirbots migrate` first" in refused.stderr

        check = await _fhirbots(env, "migrate", "--check")
        assert check.returncode == 1
        latest = datastore_history(SqlSearchIndexer().ddl).latest
        assert f"datastore    version 0 (needs {latest})" in check.stdout

        migrated = await _fhirbots(env, "migrate")
        assert migrated.returncode == 0, migrated.stderr
        assert f"datastore    version 0 -> {latest} (current)" in migrated.stdout
        for store in ("delivery", "bots", "observatory"):
            assert f"{store:<12} version 0 -> 1 (current)" in migrated.stdout
        again = await _fhirbots(env, "migrate")
        assert again.returncode == 0
        assert f"datastore    version {latest} (current)" in again.stdout

        port, management = free_port(), free_port()
        serve = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fhirbots.engine.cli.main",
            "serve",
            "--port",
            str(port),
            "--management-port",
            str(management),
            cwd=REPO,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:

            def ready() -> bool:
                assert serve.returncode is None, "serve exited"
                try:
                    return _get(f"http://127.0.0.1:{management}/readyz")[0] == 200
                except OSError:
                    return False

            await eventually(lambda: asyncio.to_thread(ready), "serve to be ready")
            status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz")
            assert status == 200
            assert body["checks"] == {"database": "ok", "eventlog": "ok", "consumers": "ok"}
            status, _ = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/livez")
            assert status == 200
        finally:
            serve.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(serve.communicate(), 60)
        assert serve.returncode == 0, err.decode()[-2000:]
