"""Fixtures for tests against real services.

Kafka: a session-scoped single-node KRaft broker started by ``deploy/kafka/broker.sh`` on a
free loopback port with its storage in a temporary folder, or an existing broker named by
``FHIRBOTS_TEST_KAFKA=host:port``. Every test gets unique topic and group names.
A broker that cannot start fails the tests (integration tests are never skipped).
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings
from fhirbots.engine.eventlog.kafka import KafkaEventLog, KafkaSettings
from fhirbots.engine.eventlog.port import EventLog, TopicSpec

REPO = Path(__file__).resolve().parents[2]
BROKER_SCRIPT = REPO / "deploy" / "kafka" / "broker.sh"

KAFKA_SESSION_TIMEOUT = timedelta(seconds=6)
"""The broker's minimum session timeout (group.min.session.timeout.ms): a killed consumer's
partitions move to the others this quickly."""

EMBEDDED_SESSION_TIMEOUT = timedelta(seconds=2)
"""Same for the embedded log, which has no minimum."""


def free_port_pair() -> int:
    """A port P such that P and P+1 (the controller) are free on loopback."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a running Kafka broker for this test session."""
    existing = os.environ.get("FHIRBOTS_TEST_KAFKA")
    if existing:
        yield existing
        return
    port = free_port_pair()
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_STATE_DIR": str(tmp_path_factory.mktemp("kafka")),
    }
    command = [str(BROKER_SCRIPT), "start"]
    started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` failed ({started.returncode}):\n"
            f"{started.stdout}\n{started.stderr}",
            pytrace=False,
        )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(
            [str(BROKER_SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=60
        )


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Makes names unique to this test: ``unique("orders")`` -> ``orders-3f2a…``."""
    suffix = uuid.uuid4().hex[:10]
    return lambda prefix: f"{prefix}-{suffix}"


def kafka_settings(bootstrap: str, topics: tuple[TopicSpec, ...] = ()) -> KafkaSettings:
    """Kafka adapter settings for tests (fast failover of killed consumers)."""
    return KafkaSettings(
        bootstrap=bootstrap,
        topics=topics,
        client_id="fhirbots-test",
        session_timeout=KAFKA_SESSION_TIMEOUT,
        heartbeat_interval=timedelta(seconds=1),
    )


def embedded_settings(path: Path, topics: tuple[TopicSpec, ...] = ()) -> EmbeddedSettings:
    """Embedded adapter settings for tests (fast failover, short cross-process polling)."""
    return EmbeddedSettings(
        path=path,
        topics=topics,
        synchronous="NORMAL",
        poll_interval=timedelta(milliseconds=50),
        heartbeat_interval=timedelta(milliseconds=200),
        session_timeout=EMBEDDED_SESSION_TIMEOUT,
    )


@pytest.fixture(params=["embedded", "kafka"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, location): ``("embedded", <sqlite file>)`` or ``("kafka", <bootstrap>)``."""
    if request.param == "kafka":
        return "kafka", str(request.getfixturevalue("kafka_bootstrap"))
    return "embedded", str(tmp_path / "eventlog.sqlite")


def make_event_log(kind: str, location: str, topics: tuple[TopicSpec, ...] = ()) -> EventLog:
    """An unstarted event log of ``kind`` at ``location`` (see the ``adapter`` fixture)."""
    if kind == "kafka":
        return KafkaEventLog(kafka_settings(location, topics))
    return EmbeddedEventLog(embedded_settings(Path(location), topics))


@pytest.fixture
async def event_log(adapter: tuple[str, str]) -> AsyncIterator[EventLog]:
    """A started event log, once per adapter."""
    log = make_event_log(*adapter)
    await log.start()
    yield log
    await log.stop()
