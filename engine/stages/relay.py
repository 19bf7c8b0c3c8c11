"""The outbox relay: publishes committed change events to ``fhir.changes.v1``.

It reads unpublished outbox rows in commit order, publishes them (awaiting the log's durable
acknowledgement) and only then marks them published. A crash between the two re-publishes the
rows on restart: a duplicate is possible, a loss is not. Consumers deduplicate by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import orjson
import structlog
from prometheus_client import Counter

from fhirbots.engine.eventlog.port import OutgoingMessage
from fhirbots.engine.observability import otel
from fhirbots.engine.storage.model import OutboxRow
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.topics import CHANGES

__all__ = ["OutboxRelay", "Publisher"]

BATCH = 500
"""Rows published at once; the log acknowledges a batch in about one round trip."""

IDLE_POLL_SECONDS = 0.2
"""How often an idle relay looks for rows committed by other processes. Writes made in this
process wake it at once through :meth:`OutboxRelay.notify`."""

ERROR_BACKOFF_SECONDS = 1.0
"""Pause after a failed publish before trying the same rows again."""

log = structlog.get_logger(__name__)

PUBLISHED = Counter("fhirbots_outbox_published_total", "Change events published by the relay")
FAILURES = Counter("fhirbots_outbox_publish_failures_total", "Failed outbox publish attempts")


class Publisher(Protocol):
    """What the relay needs of an event log."""

    async def publish_many(self, topic: str, messages: Sequence[OutgoingMessage]) -> object:
        """Publish in order; return once the log has stored them durably."""


def _message(row: OutboxRow) -> OutgoingMessage:
    return OutgoingMessage(key=row.key, value=row.payload)


def _traceparents(rows: Sequence[OutboxRow]) -> Iterator[str | None]:
    """The traceparent of each row's change event (read only when tracing is on)."""
    for row in rows:
        yield orjson.loads(row.payload).get("traceparent")


class OutboxRelay:
    """Moves outbox rows to the change topic, in commit order."""

    def __init__(
        self, storage: Storage, publisher: Publisher, *, topic: str = CHANGES, batch: int = BATCH
    ) -> None:
        self._storage = storage
        self._publisher = publisher
        self._topic = topic
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Tell the relay that rows were committed (called after each write in-process)."""
        self._wake.set()

    async def run_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        rows = await self._storage.outbox_pending(self._batch)
        if not rows:
            return 0
        with otel.spans("fhirbots.relay publish", _traceparents(rows), topic=self._topic):
            await self._publisher.publish_many(self._topic, [_message(r) for r in rows])
        await self._storage.outbox_mark_published([r.seq for r in rows])
        PUBLISHED.inc(len(rows))
        return len(rows)

    async def drain(self) -> int:
        """Publish until nothing is pending; returns how many were published."""
        total = 0
        while (n := await self.run_once()) > 0:
            total += n
        return total

    async def run(self) -> None:
        """Relay forever (until cancelled)."""
        while True:
            self._wake.clear()
            try:
                published = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                FAILURES.inc()
                log.exception("outbox publish failed; retrying")
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            if published < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)

    def start(self) -> None:
        """Run in a background task."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop the background task (rows not yet marked are published again next start)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
