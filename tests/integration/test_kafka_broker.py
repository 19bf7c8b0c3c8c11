"""``deploy/kafka/broker.sh``: brokers of two state dirs side by side (as two test sessions
start them), each stopped alone, and a start that fails leaves no broker behind."""

from __future__ import annotations

import os
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import BROKER_SCRIPT, free_port_pair

pytestmark = pytest.mark.integration

SCRIPT_TIMEOUT = 300
"""Seconds a broker.sh command may take before the test gives up on it: beyond its own
start-up limit (KAFKA_START_TIMEOUT, 90 s) and stop limit (KAFKA_STOP_TIMEOUT, 30 s)."""


class Broker:
    """One broker.sh state dir and port."""

    def __init__(self, state: Path, **env: str) -> None:
        self.state = state
        self.port = free_port_pair()
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_STATE_DIR": str(state),
            **env,
        }

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BROKER_SCRIPT), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
            check=False,
        )

    def processes(self) -> list[int]:
        """Live processes whose command line names this state dir's config (its broker)."""
        config = str(self.state / "server.properties")
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:  # it ended while we looked
                continue
            if config.encode() in args and state != "Z":
                found.append(int(entry.name))
        return found

    def answers(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0


def test_two_brokers_start_side_by_side_and_stop_alone(tmp_path: Path) -> None:
    a, b = Broker(tmp_path / "a"), Broker(tmp_path / "b")
    try:
        with ThreadPoolExecutor(2) as pool:
            started = list(pool.map(lambda broker: broker.run("start"), (a, b)))
        for broker, result in zip((a, b), started, strict=True):
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"127.0.0.1:{broker.port}" in result.stdout
            assert broker.answers()
            (pid,) = broker.processes()
            assert (broker.state / "broker.pid").read_text().strip() == str(pid)
            status = broker.run("status")
            assert status.returncode == 0 and f"bootstrap=127.0.0.1:{broker.port}" in status.stdout
        assert a.processes() != b.processes()

        stopped = a.run("stop")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert a.processes() == []
        assert a.run("status").returncode == 1
        # The other suite's broker is untouched.
        assert len(b.processes()) == 1 and b.answers()
        assert b.run("status").returncode == 0
        assert a.run("stop").stdout.strip() == "not running"
    finally:
        a.run("stop")
        b.run("stop")
    assert b.processes() == []


def test_a_broker_that_exits_during_start_up_fails_the_start(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "taken")
    with socket.socket() as taken:
        # Its client port is held by someone else: the broker cannot bind it and ends.
        taken.bind(("127.0.0.1", broker.port))
        taken.listen()
        result = broker.run("start")
    assert result.returncode == 1
    assert "exited during start-up" in result.stderr
    assert broker.processes() == []
    assert not (broker.state / "broker.pid").exists()


def test_a_start_that_times_out_stops_the_broker_it_launched(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "slow", KAFKA_START_TIMEOUT="0")
    result = broker.run("start")
    assert result.returncode == 1
    assert "not ready after 0s (stopped it)" in result.stderr
    assert broker.processes() == []
    assert not (broker.state / "broker.pid").exists()
