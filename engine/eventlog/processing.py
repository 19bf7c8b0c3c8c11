"""One batch through a consumer: validate, dead-letter poison records, run the handler with
retries. Both adapters call :meth:`BatchProcessor.process` and commit when it returns."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import structlog

from fhirbots.engine.eventlog.errors import TopicNotFound
from fhirbots.engine.eventlog.metrics import BATCH_SECONDS, CONSUMED, DEADLETTERED, HANDLER_FAILURES
from fhirbots.engine.eventlog.port import (
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    EventLog,
    Handler,
    OutgoingMessage,
    Record,
    RetryPolicy,
    Validator,
)
from fhirbots.schemas.topics import deadletter_topic

__all__ = [
    "TRANSIENT_RETRY_SECONDS",
    "BatchProcessor",
    "DeadLetterSink",
    "dead_letter_message",
    "dead_letter_sink",
    "pause",
]

_log = structlog.get_logger(__name__)

MAX_ERROR_HEADER_BYTES = 4096
"""Error text kept in a dead-letter header; a validation error can quote a whole payload."""

TRANSIENT_RETRY_SECONDS = 1.0
"""Pause of a consumer after a broker or storage error before it tries again (the consumer
never gives up: a stage that stopped consuming would stall silently)."""

DEAD_LETTER_PARTITIONS = 1
"""Partitions of a dead-letter twin created on demand (one that was not created with its
topic, e.g. when the topic was made by another tool)."""

DeadLetterSink = Callable[[str, Sequence[OutgoingMessage]], Awaitable[object]]
"""Publishes messages to a topic (the adapter's own ``publish_many``)."""


def dead_letter_sink(log: EventLog) -> DeadLetterSink:
    """Publishes dead letters with ``log``, creating a missing dead-letter topic first."""

    async def publish(topic: str, messages: Sequence[OutgoingMessage]) -> object:
        try:
            return await log.publish_many(topic, messages)
        except TopicNotFound:
            await log.create_topic(topic, partitions=DEAD_LETTER_PARTITIONS)
            return await log.publish_many(topic, messages)

    return publish


async def pause(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stopping`` is set first; True if it was."""
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def dead_letter_message(record: Record, error: BaseException) -> OutgoingMessage:
    """The dead-letter copy of ``record``: same key, value and headers, plus the error."""
    text = str(error).encode()[:MAX_ERROR_HEADER_BYTES]
    return OutgoingMessage(
        key=record.key,
        value=record.value,
        headers=(
            *record.headers,
            (HEADER_ERROR, text),
            (HEADER_ERROR_TYPE, type(error).__name__.encode()),
            (HEADER_SOURCE_TOPIC, record.topic.encode()),
            (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
            (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
        ),
    )


class BatchProcessor:
    """Runs one consumer's handler on batches.

    Args:
        group: Consumer group (for logs and metrics).
        handler: The stage's batch handler.
        validate: Poison check per record, or None.
        retry: Retry policy for handler failures.
        dead_letter: Publishes dead-letter copies.
        stopping: Set when the consumer is asked to stop; ends retry waits early.
    """

    def __init__(
        self,
        *,
        group: str,
        handler: Handler,
        validate: Validator | None,
        retry: RetryPolicy,
        dead_letter: DeadLetterSink,
        stopping: asyncio.Event,
    ) -> None:
        self._group = group
        self._handler = handler
        self._validate = validate
        self._retry = retry
        self._dead_letter = dead_letter
        self._stopping = stopping

    async def process(self, records: Sequence[Record]) -> bool:
        """Handle ``records``; True when they may be committed, False if stopped first."""
        good: list[Record] = []
        poison: list[tuple[Record, BaseException]] = []
        for record in records:
            if self._validate is None:
                good.append(record)
                continue
            try:
                self._validate(record)
            except Exception as exc:  # any failure to decode makes the record poison
                poison.append((record, exc))
            else:
                good.append(record)
        if poison:
            await self._send_dead_letters(poison)
        if good and not await self._run_handler(good):
            return False
        for topic, count in Counter(r.topic for r in records).items():
            CONSUMED.labels(topic, self._group).inc(count)
        return True

    async def _send_dead_letters(self, poison: Sequence[tuple[Record, BaseException]]) -> None:
        by_topic: dict[str, list[OutgoingMessage]] = {}
        for record, error in poison:
            _log.warning(
                "eventlog.poison",
                group=self._group,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                error=str(error)[:200],
            )
            by_topic.setdefault(deadletter_topic(record.topic), []).append(
                dead_letter_message(record, error)
            )
            DEADLETTERED.labels(record.topic, self._group).inc()
        for topic, messages in by_topic.items():
            await self._dead_letter(topic, messages)

    async def _run_handler(self, records: list[Record]) -> bool:
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                await self._handler(records)
            except Exception as exc:  # a failing handler is retried, never loses the batch
                HANDLER_FAILURES.labels(self._group).inc()
                _log.warning(
                    "eventlog.handler_failed",
                    group=self._group,
                    attempt=attempt,
                    records=len(records),
                    error=repr(exc)[:500],
                )
                limit = self._retry.max_attempts
                if limit is not None and attempt >= limit:
                    await self._send_dead_letters([(r, exc) for r in records])
                    return True
                if await pause(self._stopping, self._retry.backoff(attempt)):
                    return False
                continue
            BATCH_SECONDS.labels(self._group).observe(time.perf_counter() - started)
            return True
