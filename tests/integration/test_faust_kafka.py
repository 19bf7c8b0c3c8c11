"""A stage as a faust agent on the real broker: output, changelog-backed counters, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaError

from fhirbots.engine.eventlog.kafka import KafkaEventLog, KafkaSettings
from fhirbots.engine.eventlog.port import OutgoingMessage, Record
from tests.conftest import child_env
from tests.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

COUNTING_STAGE = """
import json, os
from fhirbots.engine.eventlog.faust_app import Stage
from fhirbots.engine.eventlog.port import OutgoingMessage

async def count(ctx, record):
    number = ctx.increment()
    body = {"key": record.key, "number": number, "offset": record.offset,
            "payload": record.value.decode()}
    return [OutgoingMessage(record.key, json.dumps(body).encode(), record.headers)]

stage = Stage(name="numbering", source=os.environ["STAGE_SOURCE"],
              sink=os.environ["STAGE_SINK"], handler=count)
"""


@pytest.fixture
async def kafka_log(kafka_bootstrap: str) -> AsyncIterator[KafkaEventLog]:
    log = KafkaEventLog(KafkaSettings(bootstrap=kafka_bootstrap, client_id="faust-test"))
    await log.start()
    yield log
    await log.stop()


async def read_all(log: KafkaEventLog, topic: str, expected: int) -> list[Record]:
    async def records() -> list[Record] | None:
        found = await log.read(topic, 0, offset=0, limit=1000)
        return found if len(found) >= expected else None

    return await eventually(records, f"{expected} records on {topic}")


class Worker:
    """A faust worker subprocess running the counting stage."""

    def __init__(self, bootstrap: str, tmp_path: Path, source: str, sink: str) -> None:
        (tmp_path / "counting_stage.py").write_text(COUNTING_STAGE)
        self.command = [
            sys.executable,
            "-m",
            "fhirbots.engine.eventlog.faust_worker",
            "--bootstrap",
            bootstrap,
            "--app-id",
            f"app-{source}",
            "--data-dir",
            str(tmp_path / "faust"),
            "--stage",
            "counting_stage:stage",
            "--partitions",
            "2",
            "--session-timeout",
            "6",
        ]
        self.env = child_env(tmp_path, STAGE_SOURCE=source, STAGE_SINK=sink)
        self.bootstrap = bootstrap
        self.source = source
        self.group = f"app-{source}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the worker and wait until its group has settled with the source assigned: a
        record published while faust is still joining may be held back until a later
        rebalance, which would make a count wait for ever."""
        self.process = await asyncio.create_subprocess_exec(*self.command, cwd=REPO, env=self.env)
        await eventually(self._serving, f"the worker's group {self.group} to be stable")

    async def _serving(self) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"the worker exited with {self.process.returncode}")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            try:
                described = await admin.describe_consumer_groups([self.group])
            except KafkaError:
                return False  # no coordinator for the group yet: it has not joined
            for response in described:
                for group in response.to_object()["groups"]:
                    if group["state"] != "Stable":
                        return False
                    for member in group["members"]:
                        raw = member["member_assignment"]
                        assigned = ConsumerProtocolMemberAssignment.decode(raw) if raw else None
                        if assigned and any(t == self.source for t, _ in assigned.assignment):
                            return True
            return False
        finally:
            await admin.close()

    async def terminate(self) -> int:
        """Send SIGTERM and wait for the process to end; returns its exit code (the caller's
        ``finally`` kills a worker that ignored it)."""
        process = self.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        await eventually(lambda: process.returncode is not None, "the worker to end on SIGTERM")
        assert process.returncode is not None
        return process.returncode

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def test_stage_counts_per_key_survives_restart_and_stops_on_sigterm(
    kafka_log: KafkaEventLog,
    kafka_bootstrap: str,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    source, sink = unique("faust-src"), unique("faust-sink")
    await kafka_log.create_topic(source, partitions=2)
    await kafka_log.create_topic(sink, partitions=1)
    worker = Worker(kafka_bootstrap, tmp_path, source, sink)
    try:
        await worker.start()
        await kafka_log.publish_many(
            source,
            [OutgoingMessage("Subscription/a", f"a{i}".encode()) for i in range(5)]
            + [
                OutgoingMessage("Subscription/b", f"b{i}".encode(), (("traceparent", b"tp"),))
                for i in range(3)
            ],
        )
        first = [json.loads(r.value) for r in await read_all(kafka_log, sink, 8)]
        numbers = {
            key: [b["number"] for b in first if b["key"] == key]
            for key in ("Subscription/a", "Subscription/b")
        }
        assert numbers == {"Subscription/a": [1, 2, 3, 4, 5], "Subscription/b": [1, 2, 3]}
        assert [b["payload"] for b in first if b["key"] == "Subscription/a"] == [
            f"a{i}" for i in range(5)
        ]
        b_out = [r for r in await kafka_log.read(sink, 0, offset=0) if r.key == "Subscription/b"]
        assert all(r.header("traceparent") == b"tp" for r in b_out)

        # A clean exit: the worker handled SIGTERM (a signal death would be negative).
        assert await worker.terminate() == 0

        # A new worker restores the counters from the changelog topic and goes on counting.
        await worker.start()
        await kafka_log.publish_many(
            source, [OutgoingMessage("Subscription/a", f"a{i}".encode()) for i in range(5, 7)]
        )
        after = [json.loads(r.value) for r in await read_all(kafka_log, sink, 10)]
        assert len(after) == 10, "records were processed twice after the restart"
        assert [b["number"] for b in after[8:]] == [6, 7]
        assert await worker.terminate() == 0
    finally:
        await worker.kill()
