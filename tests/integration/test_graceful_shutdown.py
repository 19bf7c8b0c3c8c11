"""SIGTERM to a real ``fhirbots worker matcher`` under load on a real Kafka broker (ready, and
exporting its partitions' lag on its management port, first): it exits 0 within the grace
period, and what it handled is committed. A worker started afterwards handles the rest: every
change gets its notification, and none gets two (nothing committed is handled again)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.eventlog.kafka import KafkaEventLog
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.stages.matcher import MATCHER_GROUP
from fhirbots.schemas.topics import CHANGES, NOTIFICATIONS
from tests.conftest import child_env
from tests.engine.scenarios.process import free_port
from tests.integration.conftest import kafka_settings
from tests.integration.test_matcher_workers import create, read_notes, subscription, wait_notes
from tests.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GRACE_SECONDS = 20.0


@pytest.fixture
async def engine(kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Engine]:
    running = Engine(Settings(data_dir=tmp_path, kafka=kafka_bootstrap))
    await running.open()
    await running.start_relay()
    yield running
    await running.close()


def observation(number: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1111-1"}]},
        "valueQuantity": {"value": number},
    }


class Worker:
    """A ``fhirbots worker matcher`` process with a management port."""

    def __init__(self, kafka: str, data_dir: Path, log: Path) -> None:
        self.management = free_port()
        env = {k: v for k, v in child_env().items() if not k.startswith("FHIRBOTS_")}
        env.update(
            FHIRBOTS_KAFKA=kafka,
            FHIRBOTS_DATA_DIR=str(data_dir),
            FHIRBOTS_LOG_LEVEL="INFO",
            FHIRBOTS_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
            FHIRBOTS_MANAGEMENT_PORT=str(self.management),
        )
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fhirbots.engine.cli.main", "worker", "matcher"],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def readyz(self) -> int | None:
        """The status of /readyz, None when nothing answers."""
        url = f"http://127.0.0.1:{self.management}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as refused:
            json.loads(refused.read())  # the body names the checks even then
            return int(refused.code)
        except OSError:
            return None

    async def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, "the worker exited"
            return self.readyz() == 200

        await eventually(lambda: asyncio.to_thread(ready), "the worker to be ready", within=90)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._log.close()


async def test_sigterm_under_load_drains_and_commits(
    engine: Engine, kafka_bootstrap: str, tmp_path: Path, unique: Callable[[str], str]
) -> None:
    project = unique("drain")
    await engine.create_project(project, "graceful shutdown")
    log = KafkaEventLog(kafka_settings(kafka_bootstrap))
    await log.start()
    await log.create_topic(NOTIFICATIONS)
    first = Worker(kafka_bootstrap, tmp_path, tmp_path / "first.log")
    second: Worker | None = None
    try:
        await first.wait_ready()

        def lag_exported() -> bool:
            url = f"http://127.0.0.1:{first.management}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
            series = f'fhirbots_consumer_lag_events{{group="{MATCHER_GROUP}",partition='
            return any(
                series in line and f'topic="{CHANGES}"' in line for line in text.splitlines()
            )

        # The worker samples its partitions' lag every 15 s and serves it with its metrics.
        await eventually(lambda: asyncio.to_thread(lag_exported), "the worker's lag metrics")
        await create(engine, project, subscription("Observation?code=1111-1"))

        written: set[str] = set()
        first_exited = asyncio.Event()

        async def load() -> None:
            """Writes without pause until the first worker is gone, and 100 more."""
            after_exit = 0
            while after_exit < 100:
                written.add((await create(engine, project, observation(len(written)))).id)
                after_exit += first_exited.is_set()

        writing = asyncio.create_task(load())
        await wait_notes(log, project, lambda notes: len(notes) >= 30)  # busy matching
        first.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = await asyncio.to_thread(first.process.wait, GRACE_SECONDS + 30)
        took = time.monotonic() - signalled
        first_exited.set()
        assert code == 0, (tmp_path / "first.log").read_text()[-3000:]
        assert took < GRACE_SECONDS
        handled_by_first = len(await read_notes(log, project))
        await writing

        second = Worker(kafka_bootstrap, tmp_path, tmp_path / "second.log")
        notes = await wait_notes(log, project, lambda n: written <= {x.resource_id for x in n})
        twice = [event for event, count in Counter(n.event_id for n in notes).items() if count > 1]
        assert twice == [], f"{len(twice)} changes were matched again after a graceful stop"
        assert len(notes) == len(written)
        print(
            f"\nSIGTERM under load: exit 0 after {took:.2f} s; the first worker matched "
            f"{handled_by_first} of {len(written)} changes, the next one the rest; 0 twice"
        )
    finally:
        first.stop()
        if second is not None:
            second.stop()
        await log.stop()
