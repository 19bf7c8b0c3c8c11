"""A server whose API or management port is taken stops at once with a message naming the
address and exit status 4 (servers never share a port)."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import child_env

pytestmark = pytest.mark.integration


async def _fhirbots(*argv: str) -> tuple[int, str]:
    env = {k: v for k, v in child_env().items() if not k.startswith("FHIRBOTS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fhirbots.engine.cli.main",
        *argv,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


@pytest.mark.parametrize("flag", ["--port", "--management-port"])
async def test_a_taken_port_stops_the_server(tmp_path: Path, flag: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = socket.socket()
        other.bind(("127.0.0.1", 0))
        free = other.getsockname()[1]
        other.close()
        ports = {"--port": str(free), flag: str(port)}
        status, err = await _fhirbots(
            "serve", "--data-dir", str(tmp_path / "data"), *(x for kv in ports.items() for x in kv)
        )
    assert status == 4, err
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in err
    assert "Traceback" not in err
