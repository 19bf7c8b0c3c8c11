"""Consumer lag per partition, in records and in seconds, as Prometheus gauges.

A consumer process samples the partitions assigned to its own group members every
:data:`SAMPLE_EVERY_SECONDS` (:class:`LagSampler`), so that summing over processes counts each
partition once; the statistics stage samples whole groups for the dashboard with
:func:`partition_lag` too. Both adapters answer alike, so the embedded log and Kafka export the
same series.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from datetime import UTC, datetime

import structlog

from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.eventlog.metrics import LAG_EVENTS, LAG_SECONDS
from fhirbots.engine.eventlog.port import EventLog

__all__ = ["SAMPLE_EVERY_SECONDS", "LagSampler", "partition_lag"]

SAMPLE_EVERY_SECONDS = 15.0
"""How often a consumer process samples its lag (Prometheus scrapes every 15-60 s)."""

log = structlog.get_logger(__name__)

PartitionLag = dict[tuple[str, int], tuple[int, float]]
"""(records behind, age in seconds of the oldest of them) per (topic, partition)."""


async def partition_lag(
    event_log: EventLog,
    group: str,
    now: datetime,
    *,
    only: Collection[tuple[str, int]] | None = None,
    ignore: Collection[str] = (),
) -> PartitionLag:
    """How far ``group`` is behind on each partition, set on the lag gauges as well.

    Args:
        event_log: The log the group reads.
        group: The consumer group.
        now: The time the ages are measured at.
        only: The partitions to sample (a member's assignment); all of the group's when None.
        ignore: Topics left out (a faust app's changelogs, whose offsets it never commits).
    """
    result: PartitionLag = {}
    ends: dict[str, dict[int, int]] = {}
    for (topic, partition), count in sorted((await event_log.lag(group)).items()):
        if topic in ignore or (only is not None and (topic, partition) not in only):
            continue
        seconds = 0.0
        if count > 0:
            if topic not in ends:
                ends[topic] = await event_log.end_offsets(topic)
            end = ends[topic].get(partition, 0)
            first = await event_log.read(topic, partition, offset=max(end - count, 0), limit=1)
            if first:
                seconds = max((now - first[0].timestamp).total_seconds(), 0.0)
        result[(topic, partition)] = (count, seconds)
        LAG_EVENTS.labels(group, topic, str(partition)).set(count)
        LAG_SECONDS.labels(group, topic, str(partition)).set(seconds)
    return result


class LagSampler:
    """Samples the lag of the partitions this process's group members hold, in the background.

    Args:
        event_log: The log whose consumers are sampled.
        every: Seconds between samples.
    """

    def __init__(self, event_log: EventLog, every: float = SAMPLE_EVERY_SECONDS) -> None:
        self._event_log = event_log
        self._every = every
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> None:
        """Sample once, every member of this process."""
        now = datetime.now(UTC)
        for member in self._event_log.consumers():
            assigned = member.assignment()
            if assigned:
                await partition_lag(self._event_log, member.group, now, only=assigned)

    async def _run(self) -> None:
        while True:
            try:
                await self.sample()
            except EventLogError as exc:  # the log is away; the next sample tries again
                log.warning("lag.sample_failed", error=str(exc))
            except Exception:  # a metric must never end the process's sampling for good
                log.exception("lag.sample_crashed")
            await asyncio.sleep(self._every)

    def start(self) -> None:
        """Start sampling."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="lag sampler")

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
