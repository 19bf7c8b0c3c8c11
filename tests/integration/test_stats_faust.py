"""The statistics faust app in a worker process on the real broker: windows with the counts
of every partition, trace steps, kept executions, lag, dead letters; windows open when a worker
stops are closed once by the next one; ``fhirbots worker stats`` runs it in Kafka mode.

Records carry event times an hour old: faust closes a window once the wall clock is past its
end plus the grace, so their windows close at the worker's next look. Notifications are counted
at their publish time, so theirs close a window and a grace after publishing.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.eventlog.kafka import KafkaEventLog
from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.eventlog.port import OutgoingMessage
from fhirbots.engine.observatory.model import Metric
from fhirbots.engine.observatory.store_sqlite import OBSERVATORY_DB, SqliteObservatoryStore
from fhirbots.engine.observatory.windows import window_start
from fhirbots.engine.stages.stats_faust import STATS_APP_ID, StatsTopics
from fhirbots.schemas.deliveries import DeliveryAttemptRecord
from fhirbots.schemas.events import CausationLink, ChangeEvent
from fhirbots.schemas.executions import BotExecutionRecord
from fhirbots.schemas.notifications import ChannelSpec, Notification
from fhirbots.schemas.topics import CHANGES, deadletter_topic
from tests.conftest import child_env
from tests.integration.conftest import kafka_settings
from tests.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 2
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


class Records:
    """Payloads of one project (the builders of ``tests/engine/stages/test_stats.py``, with
    the project and time of the test's choosing)."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.at = window_start(datetime.now(UTC) - timedelta(hours=1))
        """Event time of the records: their window long closed, well inside the retention."""

    def change(
        self, event_id: str, resource_type: str = "Observation", *, caused_by: str | None = None
    ) -> ChangeEvent:
        return ChangeEvent(
            event_id=event_id,
            project=self.project,
            interaction="create",
            resource_type=resource_type,
            resource_id=event_id,
            version_id="1",
            resource={"resourceType": resource_type},
            time=self.at,
            traceparent=TRACEPARENT,
            causation=(CausationLink(bot="Bot/b1", execution=caused_by),) if caused_by else (),
        )

    def changes_on_every_partition(self, per_partition: int, prefix: str) -> list[ChangeEvent]:
        """Changes whose keys fill each partition with ``per_partition`` records."""
        found: dict[int, list[ChangeEvent]] = {p: [] for p in range(PARTITIONS)}
        index = 0
        while any(len(events) < per_partition for events in found.values()):
            event = self.change(f"{prefix}{index}")
            index += 1
            bucket = found[partition_for(event.key, PARTITIONS)]
            if len(bucket) < per_partition:
                bucket.append(event)
        return [event for events in found.values() for event in events]

    def notification(self, notification_id: str, event_id: str) -> Notification:
        return Notification(
            notification_id=notification_id,
            project=self.project,
            subscription_id="sub1",
            subscription_version="1",
            event_id=event_id,
            interaction="create",
            resource_type="Observation",
            resource_id=event_id,
            version_id="1",
            channel=ChannelSpec(type="rest-hook", endpoint="https://example.org/hook"),
            time=self.at,
            traceparent=TRACEPARENT,
        )

    def attempt(self, notification_id: str, outcome: str, ms: float) -> DeliveryAttemptRecord:
        return DeliveryAttemptRecord.model_validate(
            {
                "attempt_id": uuid.uuid4().hex,
                "project": self.project,
                "subscription_id": "sub1",
                "notification_id": notification_id,
                "event_id": "e0",
                "event_number": 1,
                "channel": "rest-hook",
                "endpoint": "https://example.org/hook",
                "attempt": 1,
                "outcome": outcome,
                "status": 200 if outcome == "success" else 500,
                "started": self.at,
                "duration_ms": ms,
                "trace_id": TRACE,
            }
        )

    def execution(self, execution_id: str, recording: str) -> BotExecutionRecord:
        return BotExecutionRecord.model_validate(
            {
                "execution_id": execution_id,
                "project": self.project,
                "bot": "Bot/b1",
                "trigger": "subscription",
                "status": "success",
                "started": self.at,
                "duration_ms": 12.0,
                "trace_id": TRACEPARENT,
                "notification_id": "n0",
                "input": {"resourceType": "Observation"},
                "recording": recording,
            }
        )


def messages(payloads: Sequence[Any]) -> list[OutgoingMessage]:
    return [OutgoingMessage(p.key, p.model_dump_json().encode()) for p in payloads]


@pytest.fixture
async def kafka_log(kafka_bootstrap: str) -> AsyncIterator[KafkaEventLog]:
    log = KafkaEventLog(kafka_settings(kafka_bootstrap))
    await log.start()
    yield log
    await log.stop()


@pytest.fixture
def topics(unique: Callable[[str], str]) -> StatsTopics:
    return StatsTopics(
        unique("changes"), unique("notifications"), unique("deliveries"), unique("executions")
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteObservatoryStore]:
    """The store the worker writes (its data dir is ``tmp_path``), read by the test."""
    opened = SqliteObservatoryStore(tmp_path / OBSERVATORY_DB)
    await opened.open()
    yield opened
    await opened.close()


class Worker:
    """A worker process: the statistics app on the test's topics, or ``fhirbots worker``."""

    def __init__(self, bootstrap: str, tmp_path: Path, *command: str) -> None:
        self.command = [sys.executable, "-m", *command]
        self.env = child_env(
            FHIRBOTS_KAFKA=bootstrap, FHIRBOTS_DATA_DIR=str(tmp_path), FHIRBOTS_LOG_LEVEL="WARNING"
        )
        self.env.pop("FHIRBOTS_DATABASE_URL", None)
        self.output = tmp_path / "worker.log"
        self.process: asyncio.subprocess.Process | None = None

    @classmethod
    def stats_app(
        cls, bootstrap: str, tmp_path: Path, topics: StatsTopics, app_id: str, close_every: float
    ) -> Worker:
        names = ",".join(
            (topics.changes, topics.notifications, topics.deliveries, topics.executions)
        )
        return cls(
            bootstrap,
            tmp_path,
            *("fhirbots.engine.stages.stats_faust", "--app-id", app_id, "--topics", names),
            *("--partitions", str(PARTITIONS), "--close-every", str(close_every)),
            *("--session-timeout", "6", "--lag-group", app_id),
        )

    async def start(self, store: SqliteObservatoryStore, group: str) -> None:
        """Start the process and wait until its app runs: its leader has sampled the lag of
        ``group``. (faust may drop records it fetched while its group was still forming, until
        the next rebalance; the tests publish once the app is up.)"""
        started = datetime.now(UTC)
        with self.output.open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, cwd=REPO, env=self.env, stdout=output, stderr=output
            )

        async def sampled() -> bool:
            assert self.running()
            return bool(await store.lag(started, group))

        await eventually(sampled, f"the worker's first lag sample of {group}")

    async def terminate(self) -> int:
        """SIGTERM, then its exit code once it ended (a signal death would be negative)."""
        process = self.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        await eventually(lambda: process.returncode is not None, "the worker to end on SIGTERM")
        assert process.returncode is not None
        return process.returncode

    def running(self) -> bool:
        """True while the process runs; raises with its output once it has ended."""
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(
                f"the worker exited with {self.process.returncode}:\n{self.output.read_text()}"
            )
        return True

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def counts(
    store: SqliteObservatoryStore, worker: Worker, project: str, metric: Metric
) -> dict[tuple[str, ...], int]:
    """Events per series of ``metric`` in the store (over the last two hours)."""
    assert worker.running()
    now = datetime.now(UTC)
    since = window_start(now - timedelta(hours=2))
    points = await store.series(project, metric, since, now, now - since)
    return {point.dims: point.count for point in points}


async def wait_counts(
    store: SqliteObservatoryStore,
    worker: Worker,
    project: str,
    metric: Metric,
    expected: dict[tuple[str, ...], int],
) -> None:
    async def reached() -> bool:
        return await counts(store, worker, project, metric) == expected

    await eventually(reached, f"{metric} windows {expected} in the store")


async def test_windows_of_every_partition_traces_executions_lag_and_dead_letters(
    kafka_log: KafkaEventLog,
    kafka_bootstrap: str,
    topics: StatsTopics,
    store: SqliteObservatoryStore,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    project, app_id = unique("stats"), unique("stats-app")
    for topic in topics.sources():
        await kafka_log.create_topic(topic, partitions=PARTITIONS)
    make = Records(project)
    changes = make.changes_on_every_partition(3, "e")
    worker = Worker.stats_app(kafka_bootstrap, tmp_path, topics, app_id, close_every=1.0)
    try:
        await worker.start(store, app_id)
        await kafka_log.publish_many(
            topics.changes, [*messages(changes), OutgoingMessage(f"{project}/x", b"not json")]
        )
        await kafka_log.publish_many(
            topics.notifications, messages([make.notification(f"n{i}", "e0") for i in range(3)])
        )
        await kafka_log.publish_many(
            topics.deliveries,
            messages([make.attempt("n0", "retry", 40.0), make.attempt("n0", "success", 8.0)]),
        )
        await kafka_log.publish_many(
            topics.executions,
            messages([make.execution("x1", "all"), make.execution("x2", "errors")]),
        )
        await kafka_log.publish_many(topics.changes, messages([make.change("e9", caused_by="x1")]))

        # Six changes on two partitions, one more from a bot: the rows of both partitions add up.
        await wait_counts(store, worker, project, "changes", {("Observation", "create"): 7})
        await wait_counts(
            store, worker, project, "deliveries", {("sub1", "retry"): 1, ("sub1", "success"): 1}
        )
        await wait_counts(store, worker, project, "executions", {("Bot/b1", "success"): 2})
        await wait_counts(store, worker, project, "notifications", {("sub1",): 3})
        now = datetime.now(UTC)
        [executions] = await store.series(
            project, "executions", now - timedelta(hours=2), now, timedelta(hours=2)
        )
        assert executions.p50_ms is not None and executions.p50_ms >= 12.0

        steps = await store.trace(project, TRACE)
        kinds = sorted(step.kind for step in steps)
        assert kinds == ["change"] * 7 + ["delivery"] * 2 + ["execution"] * 2 + ["notification"] * 3
        assert {s.ref: s.parent for s in steps}["e9"] == "x1"
        assert await store.execution(project, "x1") is not None
        assert await store.execution(project, "x2") is None  # "errors" keeps failures only

        async def caught_up() -> bool:
            assert worker.running()
            samples = await store.lag(now - timedelta(minutes=5), app_id)
            return bool(samples) and samples[-1].events == 0

        await eventually(caught_up, "a lag sample of the app's group with nothing behind")

        dead_topic = deadletter_topic(topics.changes)
        partition = partition_for(f"{project}/x", PARTITIONS)
        dead = await eventually(
            lambda: kafka_log.read(dead_topic, partition, offset=0), "the dead letter"
        )
        assert [record.value for record in dead] == [b"not json"]

        assert await worker.terminate() == 0
    finally:
        await worker.kill()


async def test_windows_open_when_a_worker_stops_are_closed_once_by_the_next(
    kafka_log: KafkaEventLog,
    kafka_bootstrap: str,
    topics: StatsTopics,
    store: SqliteObservatoryStore,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    project, app_id = unique("stats"), unique("stats-app")
    for topic in topics.sources():
        await kafka_log.create_topic(topic, partitions=PARTITIONS)
    make = Records(project)
    observations: tuple[str, ...] = ("Observation", "create")

    # A worker that never looks for closed windows counts four changes, then stops.
    first = Worker.stats_app(kafka_bootstrap, tmp_path, topics, app_id, close_every=3600.0)
    second = Worker.stats_app(kafka_bootstrap, tmp_path, topics, app_id, close_every=1.0)
    third = Worker.stats_app(kafka_bootstrap, tmp_path, topics, app_id, close_every=1.0)
    try:
        await first.start(store, app_id)
        await kafka_log.publish_many(
            topics.changes, messages(make.changes_on_every_partition(2, "a"))
        )

        async def steps_stored() -> bool:
            assert first.running()
            return len(await store.trace(project, TRACE)) == 4

        await eventually(steps_stored, "the first worker to store the four trace steps")
        assert await first.terminate() == 0
        now = datetime.now(UTC)
        assert await store.series(project, "changes", make.at, now, now - make.at) == []

        # The next worker restores the open windows, adds two changes and closes them.
        await second.start(store, app_id)
        await kafka_log.publish_many(
            topics.changes, messages(make.changes_on_every_partition(1, "b"))
        )
        await wait_counts(store, second, project, "changes", {observations: 6})
        assert await second.terminate() == 0

        # A third worker does not close them again (they were deleted from the changelog):
        # by the time its first window (a Patient) is stored, a second report would be too.
        await third.start(store, app_id)
        await kafka_log.publish_many(topics.changes, messages([make.change("p", "Patient")]))
        expected: dict[tuple[str, ...], int] = {observations: 6, ("Patient", "create"): 1}
        await wait_counts(store, third, project, "changes", expected)
        assert await third.terminate() == 0
    finally:
        for worker in (first, second, third):
            await worker.kill()


async def test_worker_stats_runs_the_app_in_kafka_mode(
    kafka_log: KafkaEventLog,
    kafka_bootstrap: str,
    store: SqliteObservatoryStore,
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    project = unique("stats")
    worker = Worker(kafka_bootstrap, tmp_path, "fhirbots.engine.cli.main", "worker", "stats")
    try:
        await worker.start(store, STATS_APP_ID)
        await kafka_log.publish_many(CHANGES, messages([Records(project).change("e1")]))
        await wait_counts(store, worker, project, "changes", {("Observation", "create"): 1})
        assert await worker.terminate() == 0
    finally:
        await worker.kill()
