"""The statistics stage: what happened, counted in windows and indexed by trace.

It reads the change, notification, delivery and bot-execution topics in a consumer group of its
own and, for each record:

* counts it in a tumbling window (:class:`fhirbots.engine.observatory.windows.WindowAggregator`):
  changes per resource type and interaction, notifications per subscription, deliveries per
  subscription and outcome, executions per bot and status (with their durations);
* adds a step to its trace (:class:`fhirbots.engine.observatory.model.ActivityRow`), so the
  dashboard can draw a write, its notifications, their deliveries, the bot runs and their writes
  as one tree;
* keeps execution records, as far as the Bot's ``executionRecording`` asks.

Closed windows are flushed to the observatory store on a timer, so a quiet system still closes
its windows; the same timer samples consumer lag (in events and in seconds) and purges what is
older than the retention (:class:`Upkeep`). What a record adds (:func:`facts_of`) is pure, and
:func:`fold` counts it. ``fhirbots serve`` runs the stage in-process; ``fhirbots worker stats``
runs it alone, scaled out by the consumer group (each member counts its partitions' records;
the store adds their windows). In Kafka mode ``fhirbots worker stats`` runs the same facts in a
faust app instead (:mod:`fhirbots.engine.stages.stats_faust`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import structlog
from prometheus_client import Counter

from fhirbots.engine.eventlog.lag import partition_lag
from fhirbots.engine.eventlog.port import ConsumerHandle, ConsumerOptions, EventLog, Record
from fhirbots.engine.observability.tracing import trace_id_in
from fhirbots.engine.observatory.model import ActivityKind, ActivityRow, LagSample, Metric
from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.engine.observatory.windows import WindowAggregator
from fhirbots.schemas.deliveries import DeliveryAttemptRecord
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.executions import BotExecutionRecord
from fhirbots.schemas.notifications import Notification
from fhirbots.schemas.topics import BOT_EXECUTIONS, CHANGES, DELIVERIES, NOTIFICATIONS

__all__ = [
    "SOURCES",
    "STATS_GROUP",
    "TICK",
    "Count",
    "Facts",
    "Folded",
    "Payload",
    "StatsStage",
    "Upkeep",
    "decode",
    "facts_of",
    "fold",
    "sample_lag",
]

STATS_GROUP = "fhirbots-stats"
"""Consumer group of the statistics stage."""

SOURCES = (CHANGES, NOTIFICATIONS, DELIVERIES, BOT_EXECUTIONS)
"""The topics it reads."""

TICK = timedelta(seconds=2)
"""How often closed windows are flushed and lag is sampled: a chart is at most a window and a
tick behind."""

PURGE_EVERY = timedelta(hours=1)
"""How often records older than the retention are deleted."""

log = structlog.get_logger(__name__)

FOLDED = Counter(
    "fhirbots_stats_records_total", "Records counted by the statistics stage", ["topic"]
)

Payload = ChangeEvent | Notification | DeliveryAttemptRecord | BotExecutionRecord


def decode(record: Record, source: str | None = None) -> Payload:
    """The payload of a record of one of :data:`SOURCES` (raises on a malformed one).

    Args:
        record: The record.
        source: Which of :data:`SOURCES` it comes from, when its topic has another name (a
            deployment or a test that renames the topics); by default its topic.
    """
    topic = source or record.topic
    if topic == CHANGES:
        return ChangeEvent.model_validate_json(record.value)
    if topic == NOTIFICATIONS:
        return Notification.model_validate_json(record.value)
    if topic == DELIVERIES:
        return DeliveryAttemptRecord.model_validate_json(record.value)
    if topic == BOT_EXECUTIONS:
        return BotExecutionRecord.model_validate_json(record.value)
    raise ValueError(f"the statistics stage does not read {topic!r}")


def _step(
    record: Record,
    project: str,
    trace_id: str,
    kind: ActivityKind,
    ref: str,
    parent: str | None,
    at: datetime,
    duration_ms: float | None = None,
    *,
    summary: dict[str, Any],
) -> ActivityRow:
    """A trace step that points at its full record in the log."""
    return ActivityRow(
        project,
        trace_id,
        kind,
        ref,
        parent,
        at,
        duration_ms,
        summary,
        record.topic,
        record.partition,
        record.offset,
    )


class Count(NamedTuple):
    """What one record adds to a window: one event of a series at a time, maybe a duration."""

    project: str
    metric: Metric
    dims: tuple[str, ...]
    at: datetime
    duration_ms: float | None = None


@dataclass(frozen=True)
class Facts:
    """What one record adds to the observatory: a count, a trace step, an execution to keep.

    Both modes derive them with :func:`facts_of`; embedded mode counts in a
    :class:`WindowAggregator` (:func:`fold`), Kafka mode in a faust table.
    """

    count: Count
    step: ActivityRow | None = None
    kept: BotExecutionRecord | None = None


@dataclass
class Folded:
    """What a batch of records adds to the store besides window counts."""

    activity: list[ActivityRow] = field(default_factory=list)
    executions: list[BotExecutionRecord] = field(default_factory=list)

    def add(self, facts: Facts) -> None:
        """Keep the step and the execution record of ``facts``."""
        if facts.step is not None:
            self.activity.append(facts.step)
        if facts.kept is not None:
            self.executions.append(facts.kept)


def facts_of(record: Record, payload: Payload) -> Facts:
    """The count, trace step and kept execution of one record (pure)."""
    if isinstance(payload, ChangeEvent):
        return _change_facts(record, payload)
    if isinstance(payload, Notification):
        return _notification_facts(record, payload)
    if isinstance(payload, DeliveryAttemptRecord):
        return _delivery_facts(record, payload)
    return _execution_facts(record, payload)


def _change_facts(record: Record, payload: ChangeEvent) -> Facts:
    count = Count(
        payload.project, "changes", (payload.resource_type, payload.interaction), payload.time
    )
    trace = trace_id_in(payload.traceparent)
    if trace is None:
        return Facts(count)
    return Facts(
        count,
        _step(
            record,
            payload.project,
            trace,
            "change",
            payload.event_id,
            payload.causation[-1].execution if payload.causation else None,
            payload.time,
            summary={
                "resource": f"{payload.resource_type}/{payload.resource_id}",
                "version": payload.version_id,
                "interaction": payload.interaction,
                "author": payload.author,
            },
        ),
    )


def _notification_facts(record: Record, payload: Notification) -> Facts:
    count = Count(payload.project, "notifications", (payload.subscription_id,), record.timestamp)
    trace = trace_id_in(payload.traceparent)
    if trace is None:
        return Facts(count)
    return Facts(
        count,
        _step(
            record,
            payload.project,
            trace,
            "notification",
            payload.notification_id,
            payload.event_id,
            record.timestamp,
            summary={
                "subscription": payload.subscription_id,
                "resource": f"{payload.resource_type}/{payload.resource_id}",
                "channel": payload.channel.type,
                "endpoint": payload.channel.endpoint,
            },
        ),
    )


def _delivery_facts(record: Record, payload: DeliveryAttemptRecord) -> Facts:
    count = Count(
        payload.project,
        "deliveries",
        (payload.subscription_id, payload.outcome),
        payload.started,
        payload.duration_ms,
    )
    if payload.trace_id is None:
        return Facts(count)
    return Facts(
        count,
        _step(
            record,
            payload.project,
            payload.trace_id,
            "delivery",
            payload.attempt_id,
            payload.notification_id,
            payload.started,
            payload.duration_ms,
            summary={
                "subscription": payload.subscription_id,
                "event_number": payload.event_number,
                "endpoint": payload.endpoint,
                "attempt": payload.attempt,
                "outcome": payload.outcome,
                "status": payload.status,
                "error": payload.error,
                "response": payload.response_excerpt,
            },
        ),
    )


def _execution_facts(record: Record, payload: BotExecutionRecord) -> Facts:
    count = Count(
        payload.project,
        "executions",
        (payload.bot, payload.status),
        payload.started,
        payload.duration_ms,
    )
    kept = payload if payload.kept else None
    trace = trace_id_in(payload.trace_id)
    if trace is None:
        return Facts(count, kept=kept)
    step = _step(
        record,
        payload.project,
        trace,
        "execution",
        payload.execution_id,
        payload.notification_id,
        payload.started,
        payload.duration_ms,
        summary={
            "bot": payload.bot,
            "status": payload.status,
            "trigger": payload.trigger,
            "error": payload.error,
            "kept": payload.kept,
        },
    )
    return Facts(count, step, kept)


def fold(record: Record, payload: Payload, windows: WindowAggregator, out: Folded) -> None:
    """Count one record in ``windows`` and add its trace step (and execution) to ``out``."""
    facts = facts_of(record, payload)
    windows.add(*facts.count)
    out.add(facts)
    FOLDED.labels(record.topic).inc()


async def sample_lag(
    event_log: EventLog,
    groups: Sequence[str],
    now: datetime,
    *,
    ignore: Collection[str] = (),
) -> list[LagSample]:
    """How far behind each group is: records not committed, and the age of the oldest one.

    Topics in ``ignore`` do not count: a faust app's members read its table changelogs, whose
    offsets it never commits.
    """
    samples = []
    for group in groups:
        behind = (await partition_lag(event_log, group, now, ignore=ignore)).values()
        events = sum(count for count, _ in behind)
        seconds = max((age for _, age in behind), default=0.0)
        samples.append(LagSample(group, now, events, seconds))
    return samples


class Upkeep:
    """What the statistics timer does besides closing windows: sample lag, purge when due.

    Args:
        store: Where the samples go and what is purged.
        retention: How long the store keeps what it holds.
        lag_groups: Consumer groups whose lag is sampled.
        lag_ignores: Topics left out of the lag (see :func:`sample_lag`).
    """

    def __init__(
        self,
        store: ObservatoryStore,
        *,
        retention: timedelta,
        lag_groups: Sequence[str] = (),
        lag_ignores: Collection[str] = (),
    ) -> None:
        self.store = store
        self.retention = retention
        self.lag_groups = tuple(lag_groups)
        self.lag_ignores = frozenset(lag_ignores)
        self._last_purge: datetime | None = None

    async def run(self, event_log: EventLog | None, now: datetime) -> None:
        """Sample the lag of :attr:`lag_groups` (with an event log) and purge when due."""
        if event_log is not None and self.lag_groups:
            samples = await sample_lag(event_log, self.lag_groups, now, ignore=self.lag_ignores)
            await self.store.add_lag(samples)
        if self._last_purge is None or now - self._last_purge >= PURGE_EVERY:
            purged = await self.store.purge(now - self.retention)
            self._last_purge = now
            if purged:
                log.info("observatory purged", rows=purged, retention=str(self.retention))


class StatsStage:
    """Runs the fold over the source topics and keeps the observatory store up to date.

    Args:
        store: Where windows, samples, records and trace steps go.
        retention: How long they are kept.
        lag_groups: Consumer groups whose lag is sampled.
    """

    def __init__(
        self,
        store: ObservatoryStore,
        *,
        retention: timedelta,
        lag_groups: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.upkeep = Upkeep(store, retention=retention, lag_groups=lag_groups)
        self.windows = WindowAggregator()
        self._handle: ConsumerHandle | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def retention(self) -> timedelta:
        """How long the store keeps what the stage writes."""
        return self.upkeep.retention

    @retention.setter
    def retention(self, value: timedelta) -> None:
        self.upkeep.retention = value

    @property
    def lag_groups(self) -> tuple[str, ...]:
        """Consumer groups whose lag is sampled."""
        return self.upkeep.lag_groups

    async def handle(self, records: list[Record]) -> None:
        """Fold one batch (the consumer's handler); steps and records are stored before the
        batch is committed, windows when they close."""
        out = Folded()
        for record in records:
            fold(record, decode(record), self.windows, out)
        if out.activity:
            await self.store.add_activity(out.activity)
        if out.executions:
            await self.store.add_executions(out.executions)

    async def tick(self, event_log: EventLog | None, now: datetime | None = None) -> None:
        """Flush closed windows, sample lag, purge when due."""
        now = now or datetime.now(UTC)
        closed = self.windows.flush(now)
        if closed:
            await self.store.add_windows(closed)
        await self.upkeep.run(event_log, now)

    async def _tick_forever(self, event_log: EventLog) -> None:
        while True:
            await asyncio.sleep(TICK.total_seconds())
            try:
                await self.tick(event_log)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("statistics tick failed; trying again next tick")

    async def start(self, event_log: EventLog, *, options: ConsumerOptions | None = None) -> None:
        """Join the consumer group of the source topics and start the timer."""
        for topic in SOURCES:
            await event_log.create_topic(topic)
        self._handle = await event_log.consume(
            list(SOURCES), STATS_GROUP, self.handle, options=options, validate=decode
        )
        self._ticker = asyncio.create_task(self._tick_forever(event_log), name="stats-tick")

    async def stop(self) -> None:
        """Leave the group, then flush every window still open (nothing counted is lost)."""
        if self._handle is not None:
            await self._handle.stop()
            self._handle = None
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        rest = self.windows.flush(everything=True)
        if rest:
            await self.store.add_windows(rest)
