"""Delivery-attempt records: one message on ``fhir.deliveries.v1`` per attempt.

Lanes hand a record over without waiting (:meth:`AttemptLog.add`); a background task publishes
what has gathered, in batches. The records serve the dashboard (statistics, live tail, traces),
not delivery itself, so a log that cannot publish keeps at most :data:`MAX_PENDING` records,
counts what it drops, and delivery goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from prometheus_client import Counter

from fhirbots.engine.delivery.attempt import AttemptResult
from fhirbots.engine.delivery.store import Delivery
from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.eventlog.port import OutgoingMessage
from fhirbots.engine.observability.tracing import trace_id_in
from fhirbots.schemas.deliveries import (
    RESPONSE_EXCERPT_CHARS,
    DeliveryAttemptRecord,
    DeliveryChannel,
    DeliveryOutcome,
)
from fhirbots.schemas.topics import DELIVERIES

__all__ = ["MAX_PENDING", "AttemptLog", "Publisher", "attempt_record"]

MAX_PENDING = 10_000
"""Records kept while the event log is unavailable; older ones are dropped beyond it."""

FLUSH_SECONDS = 0.05
"""How long a record may wait for others to share its publish."""

_log = structlog.get_logger(__name__)

DROPPED = Counter(
    "fhirbots_delivery_records_dropped_total",
    "Delivery-attempt records dropped because the event log could not take them",
)


def attempt_record(
    row: Delivery,
    attempt: int,
    result: AttemptResult,
    outcome: DeliveryOutcome,
    channel: DeliveryChannel,
) -> DeliveryAttemptRecord:
    """The record of one attempt to deliver ``row``."""
    n = row.notification
    return DeliveryAttemptRecord(
        attempt_id=uuid.uuid4().hex,
        project=n.project,
        subscription_id=n.subscription_id,
        notification_id=n.notification_id,
        event_id=n.event_id,
        event_number=row.event_number,
        channel=channel,
        endpoint=n.channel.endpoint,
        attempt=attempt,
        outcome=outcome,
        status=result.status,
        error=result.error,
        response_excerpt=(result.excerpt or "")[:RESPONSE_EXCERPT_CHARS] or None,
        started=datetime.now(UTC) - timedelta(seconds=result.seconds),
        duration_ms=result.seconds * 1000.0,
        trace_id=trace_id_in(n.traceparent),
    )


class Publisher(Protocol):
    """What the attempt log needs of an event log."""

    async def create_topic(self, name: str) -> None:
        """Create the topic if it does not exist."""

    async def publish_many(self, topic: str, messages: Sequence[OutgoingMessage]) -> object:
        """Publish in order; return once the log has stored them durably."""


class AttemptLog:
    """Publishes attempt records to :data:`fhirbots.schemas.topics.DELIVERIES` in batches."""

    def __init__(self, event_log: Publisher, topic: str = DELIVERIES) -> None:
        self._event_log = event_log
        self._topic = topic
        self._pending: list[DeliveryAttemptRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, record: DeliveryAttemptRecord) -> None:
        """Queue a record for publishing (never waits)."""
        self._pending.append(record)
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            del self._pending[:dropped]
            DROPPED.inc(dropped)
        self._wake.set()

    async def flush(self) -> None:
        """Publish every queued record (kept queued if the log refuses them)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        messages = [OutgoingMessage(r.key, r.model_dump_json().encode()) for r in batch]
        try:
            await self._event_log.publish_many(self._topic, messages)
        except EventLogError:
            _log.warning("delivery records not published; kept for the next try", n=len(batch))
            self._pending[:0] = batch
            raise

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_SECONDS)
            self._wake.clear()
            with contextlib.suppress(EventLogError):
                await self.flush()

    async def start(self) -> None:
        """Create the topic and start publishing in the background."""
        await self._event_log.create_topic(self._topic)
        self._task = asyncio.create_task(self._run(), name="delivery-records")

    async def stop(self) -> None:
        """Publish what is queued (if the log takes it) and stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(EventLogError):
            await self.flush()
