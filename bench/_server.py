"""Start and stop a real ``fhirbots serve`` process for the benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Server:
    url: str
    token: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    database_url: str | None = None,
    kafka: str | None = None,
    *,
    api_only: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """A server on a fresh data dir (and, for PostgreSQL, whatever the database holds)."""
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        env = {**os.environ, "FHIRBOTS_LOG_LEVEL": "WARNING", **(extra_env or {})}
        env.pop("FHIRBOTS_DATABASE_URL", None)
        env.pop("FHIRBOTS_KAFKA", None)
        if database_url:
            env["FHIRBOTS_DATABASE_URL"] = database_url
        if kafka:
            env["FHIRBOTS_KAFKA"] = kafka
        cmd = [
            sys.executable,
            "-m",
            "fhirbots.engine.cli.main",
            "serve",
            "--data-dir",
            data_dir,
            "--port",
            str(port),
        ]
        if api_only:
            cmd.append("--api-only")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("server did not start") from None
                    time.sleep(0.2)
            token = (Path(data_dir) / "admin-token").read_text().strip()
            yield Server(f"http://127.0.0.1:{port}/fhir/R4", token)
        finally:
            proc.terminate()
            proc.wait(30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
