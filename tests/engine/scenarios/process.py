"""A real ``fhirbots serve`` process on a free port, for tests that drive it from outside."""

from __future__ import annotations

import asyncio
import socket
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import child_env
from tests.waiting import eventually

__all__ = ["ServedProcess", "clean_env", "free_port", "run_fhirbots", "serve_process"]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**env: str) -> dict[str, str]:
    """The environment of a ``fhirbots`` child: this checkout's code, no ``FHIRBOTS_*`` setting
    of the test's own environment, and ``env``."""
    return {**{k: v for k, v in child_env().items() if not k.startswith("FHIRBOTS_")}, **env}


async def run_fhirbots(*argv: str, **env: str) -> tuple[int, str, str]:
    """Run a ``fhirbots`` command to its end; (status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fhirbots.engine.cli.main",
        *argv,
        env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@dataclass(frozen=True)
class ServedProcess:
    """The running server: its FHIR base URL, data dir and admin key."""

    base: str
    data_dir: Path
    output: list[bytes]
    pid: int

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()


@asynccontextmanager
async def serve_process(data_dir: Path, **env: str) -> AsyncIterator[ServedProcess]:
    """``fhirbots serve`` (embedded mode) with ``env`` on top of a clean ``FHIRBOTS_*``-free
    environment; stopped with SIGTERM at exit, which must end it with status 0."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fhirbots.engine.cli.main",
        "serve",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
        env=clean_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return True
        except OSError:
            assert proc.returncode is None, "serve exited"
            return False

    output: list[bytes] = []
    try:
        await eventually(lambda: asyncio.to_thread(healthy), "serve to answer /healthz")
        yield ServedProcess(f"http://127.0.0.1:{port}/fhir/R4", data_dir, output, proc.pid)
    finally:
        if proc.returncode is None:
            proc.terminate()
        out, _ = await proc.communicate()
        output.append(out)
        assert proc.returncode == 0
