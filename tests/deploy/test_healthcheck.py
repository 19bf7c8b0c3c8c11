"""The image's HEALTHCHECK script (deploy/docker/healthcheck.py): which port it asks, and that
only a 200 from ``/readyz`` counts as healthy (503 while starting or draining does not)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "deploy" / "docker" / "healthcheck.py"


@contextmanager
def readiness_server(status: int) -> Iterator[tuple[int, list[str]]]:
    """A server on a free loopback port answering every GET with ``status``; yields its port
    and the paths it was asked for."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(status)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


def healthcheck(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_ready_api_port_is_healthy() -> None:
    with readiness_server(200) as (port, asked):
        done = healthcheck(FHIRBOTS_PORT=str(port))
    assert done.returncode == 0, done.stderr
    assert asked == ["/readyz"]


def test_a_worker_is_asked_on_its_management_port() -> None:
    with readiness_server(200) as (management, asked), readiness_server(503) as (api, _):
        done = healthcheck(FHIRBOTS_PORT=str(api), FHIRBOTS_MANAGEMENT_PORT=str(management))
    assert done.returncode == 0, done.stderr
    assert asked == ["/readyz"]


def test_draining_or_starting_is_unhealthy() -> None:
    with readiness_server(503) as (port, _):
        done = healthcheck(FHIRBOTS_PORT=str(port))
    assert done.returncode == 1
    assert f"not ready: http://127.0.0.1:{port}/readyz" in done.stderr
    assert "503" in done.stderr


def test_nothing_listening_is_unhealthy() -> None:
    with readiness_server(200) as (port, _):
        pass  # closed again: the port is free
    done = healthcheck(FHIRBOTS_PORT=str(port))
    assert done.returncode == 1
    assert "not ready" in done.stderr
