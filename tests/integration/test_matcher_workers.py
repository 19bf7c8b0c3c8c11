"""Two real ``fhirbots worker matcher`` processes on a real Kafka broker: a Subscription
created or changed takes effect for the very next write, whichever process reads it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.eventlog.kafka import KafkaEventLog
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import StoredResource, WriteContext
from fhirbots.schemas.notifications import Notification
from fhirbots.schemas.topics import NOTIFICATIONS
from tests.conftest import child_env
from tests.integration.conftest import kafka_settings
from tests.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CTX = WriteContext(author="ApiKey/test")
WAIT_SECONDS = 90.0
"""Two processes start, join the group and rebalance; generous on a loaded machine."""


@pytest.fixture
def workers(kafka_bootstrap: str, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = child_env(
        FHIRBOTS_KAFKA=kafka_bootstrap,
        FHIRBOTS_DATA_DIR=str(tmp_path),
        FHIRBOTS_LOG_LEVEL="WARNING",
    )
    env.pop("FHIRBOTS_DATABASE_URL", None)
    logs = [(tmp_path / f"worker{i}.log").open("wb") for i in range(2)]
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "fhirbots.engine.cli.main", "worker", "matcher"],
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        for handle in logs
    ]
    yield started
    for process in started:
        process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for handle in logs:
        handle.close()


@pytest.fixture
async def engine(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Engine]:
    # The Observations refer to Patients never stored: matching, not references, is tested.
    settings = Settings(
        data_dir=tmp_path, kafka=kafka_bootstrap, referential_integrity_on_write=False
    )
    running = Engine(settings)
    await running.open()
    await running.start_relay()
    yield running
    await running.close()


async def read_notes(log: KafkaEventLog, project: str) -> list[Notification]:
    notes: list[Notification] = []
    for partition in range(await log.partitions(NOTIFICATIONS)):
        offset = 0
        while True:
            batch = await log.read(NOTIFICATIONS, partition, offset=offset, limit=500)
            if not batch:
                break
            offset = batch[-1].offset + 1
            for record in batch:
                note = Notification.model_validate_json(record.value)
                if note.project == project:
                    notes.append(note)
    return notes


async def wait_notes(
    log: KafkaEventLog, project: str, predicate: Callable[[list[Notification]], bool]
) -> list[Notification]:
    async def holds() -> bool:
        return predicate(await read_notes(log, project))

    await eventually(holds, "the expected notifications", within=WAIT_SECONDS)
    return await read_notes(log, project)


def subscription(criteria: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
    }


async def create(engine: Engine, project: str, resource: dict[str, Any]) -> StoredResource:
    """Create ``resource`` in ``project``; returns the stored version."""
    written = await engine.fhir.create(project, resource, CTX)
    assert written.stored is not None
    return written.stored


def observation(code: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


async def test_two_worker_processes_see_subscription_changes_at_once(
    engine: Engine,
    workers: list[subprocess.Popen[bytes]],
    kafka_bootstrap: str,
    unique: Callable[[str], str],
) -> None:
    project = unique("proj")
    await engine.create_project(project, "matcher workers")
    log = KafkaEventLog(kafka_settings(kafka_bootstrap))
    await log.start()
    await log.create_topic(NOTIFICATIONS)  # the workers create it too; whoever is first
    try:
        # Both workers up and matching: a watcher subscription and probes on many partitions.
        watcher = await create(engine, project, subscription("Observation"))
        probes = {
            (await create(engine, project, observation("0", f"probe{i}"))).id for i in range(8)
        }
        await wait_notes(log, project, lambda n: probes <= {x.resource_id for x in n})
        assert all(p.poll() is None for p in workers), "a worker exited"

        sub = await create(engine, project, subscription("Observation?code=1111-1"))
        first = {
            (await create(engine, project, observation("1111-1", f"a{i}"))).id for i in range(12)
        }
        notes = await wait_notes(
            log,
            project,
            lambda n: first <= {x.resource_id for x in n if x.subscription_id == sub.id},
        )

        assert sub.content is not None
        changed = {**sub.content, "criteria": "Observation?code=2222-2"}
        await engine.fhir.update(project, "Subscription", sub.id, changed, CTX)
        second = {
            (await create(engine, project, observation("1111-1", f"b{i}"))).id for i in range(12)
        }
        notes = await wait_notes(
            log,
            project,
            lambda n: second <= {x.resource_id for x in n if x.subscription_id == watcher.id},
        )
        by_sub = {x.resource_id for x in notes if x.subscription_id == sub.id}
        assert not second & by_sub
        assert first <= by_sub
    finally:
        await log.stop()
