"""A server whose API or management port is taken stops at once with a message naming the
address and exit status 4 (servers never share a port)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.engine.scenarios.process import run_fhirbots

pytestmark = pytest.mark.integration


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
        status, _, err = await run_fhirbots(
            "serve", "--data-dir", str(tmp_path / "data"), *(x for kv in ports.items() for x in kv)
        )
    assert status == 4, err
    assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in err
    assert "Traceback" not in err
