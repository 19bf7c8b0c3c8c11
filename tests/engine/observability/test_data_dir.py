"""The data dir: 0700 with files 0600 (tightened at start, with a warning), one embedded engine
at a time (an exclusive lock naming the holder), and one server per port."""

from __future__ import annotations

import asyncio
import os
import stat
import urllib.request
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fhirbots.engine.observability.data_dir import DataDirInUse, DataDirLock, secure
from tests.engine.scenarios.process import run_fhirbots, serve_process


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secure_creates_a_private_dir(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    secure(data)
    assert _mode(data) == 0o700


def test_secure_tightens_a_looser_dir_and_its_files_with_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "secrets").mkdir(parents=True)
    os.chmod(data, 0o755)
    os.chmod(data / "secrets", 0o775)
    (data / "fhirbots.db").write_text("x")
    os.chmod(data / "fhirbots.db", 0o644)
    (data / "secrets" / "key").write_text("x")
    os.chmod(data / "secrets" / "key", 0o666)
    (data / "private").write_text("x")
    os.chmod(data / "private", 0o400)
    with capture_logs() as logs:
        secure(data)
    assert _mode(data) == 0o700
    assert _mode(data / "secrets") == 0o700
    assert _mode(data / "fhirbots.db") == 0o600
    assert _mode(data / "secrets" / "key") == 0o600
    assert _mode(data / "private") == 0o400  # stricter modes stay
    warned = {e["path"] for e in logs if e["event"] == "data_dir.permissions_tightened"}
    assert warned == {
        str(data),
        str(data / "secrets"),
        str(data / "fhirbots.db"),
        str(data / "secrets" / "key"),
    }
    assert all(e["log_level"] == "warning" for e in logs)


def test_a_mode_the_process_may_not_change_is_logged_and_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume's root owned by another user (root's emptyDir): starting goes on."""
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o777)

    def refuse(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    with capture_logs() as logs:
        secure(data)
    assert [e["event"] for e in logs] == ["data_dir.permissions_not_tightened"]
    assert _mode(data) == 0o777


def test_the_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    with DataDirLock(tmp_path) as held:
        assert (tmp_path / "lock").read_text().strip() == str(os.getpid())
        assert _mode(held.path) == 0o600
        with pytest.raises(DataDirInUse) as refused, DataDirLock(tmp_path):
            pass
        assert str(tmp_path) in str(refused.value)
        assert f"pid {os.getpid()}" in str(refused.value)
    with DataDirLock(tmp_path):  # released on exit
        pass


async def _serve(*args: str) -> tuple[int, str]:
    status, _, err = await run_fhirbots("serve", *args)
    return status, err


@pytest.mark.integration
async def test_a_second_serve_on_the_data_dir_or_the_port_refuses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    async with serve_process(data) as served:
        assert _mode(data) == 0o700
        for name in ("fhirbots.db", "fhirbots.db-wal", "eventlog.sqlite", "admin-token", "lock"):
            assert _mode(data / name) == 0o600, name
        port = served.base.split(":")[2].split("/")[0]
        status, err = await _serve("--data-dir", str(data), "--port", "0")
        assert status == 4
        assert f"the data dir {data} is in use" in err
        assert f"pid {served.pid}" in err
        status, err = await _serve("--data-dir", str(tmp_path / "other"), "--port", port)
        assert status == 4
        assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in err
        assert "Traceback" not in err
        # The first server still serves, and alone.
        health = served.base.removesuffix("/fhir/R4") + "/healthz"
        with await asyncio.to_thread(urllib.request.urlopen, health, None, 5) as answer:
            assert answer.status == 200
