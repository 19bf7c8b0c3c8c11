"""Embedded adapter: a durable, partitioned log in one SQLite file in the data dir.

Same semantics as Kafka for the engine's purposes (see :mod:`fhirbots.engine.eventlog.port`): keys
map to partitions with Kafka's partitioner, offsets are per partition, consumer groups share
partitions between members and commit offsets after each handled batch, retention trims by
age and size. Consumers in this process are woken the moment a publish commits; members in
other processes sharing the file notice within ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

import structlog

from fhirbots.engine.eventlog.errors import BrokerError, EventLogClosed, InvalidTopic
from fhirbots.engine.eventlog.metrics import PUBLISHED, REBALANCES
from fhirbots.engine.eventlog.port import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PARTITIONS,
    ConsumerHandle,
    ConsumerOptions,
    Handler,
    Headers,
    OutgoingMessage,
    Record,
    Retention,
    TopicSpec,
    Validator,
)
from fhirbots.engine.eventlog.processing import (
    TRANSIENT_RETRY_SECONDS,
    BatchProcessor,
    dead_letter_sink,
    pause,
)
from fhirbots.engine.eventlog.sqlite_store import SqliteLogStore
from fhirbots.schemas.topics import DEADLETTER_SUFFIX, deadletter_topic

__all__ = ["EmbeddedConsumer", "EmbeddedEventLog", "EmbeddedSettings", "Synchronous"]

_log = structlog.get_logger(__name__)
_T = TypeVar("_T")

Synchronous = Literal["FULL", "NORMAL", "EXTRA"]
"""SQLite ``synchronous`` levels that keep a WAL database consistent."""

LOG_FILE_NAME = "eventlog.sqlite"
"""File name of the log inside the data dir."""


@dataclass(frozen=True)
class EmbeddedSettings:
    """Settings of the embedded log.

    Attributes:
        path: The SQLite file.
        topics: Topics created on start.
        synchronous: SQLite ``synchronous`` pragma: ``FULL`` survives power loss, ``NORMAL``
            only a process crash (faster).
        poll_interval: How often an idle consumer looks for records written by other
            processes (in-process publishes wake it at once).
        heartbeat_interval: How often a group member proves it is alive.
        session_timeout: A member silent for this long (a crashed process) is removed from
            its group and its partitions go to the others.
        retention_interval: How often retention limits are enforced.
    """

    path: Path
    topics: tuple[TopicSpec, ...] = ()
    synchronous: Synchronous = "FULL"
    poll_interval: timedelta = timedelta(milliseconds=100)
    heartbeat_interval: timedelta = timedelta(seconds=1)
    session_timeout: timedelta = timedelta(seconds=10)
    retention_interval: timedelta = timedelta(minutes=1)

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, topics: tuple[TopicSpec, ...] = ()) -> EmbeddedSettings:
        """Settings with the log file in ``data_dir``."""
        return cls(path=data_dir / LOG_FILE_NAME, topics=topics)


class EmbeddedEventLog:
    """The :class:`fhirbots.engine.eventlog.port.EventLog` on SQLite.

    Args:
        settings: Where the file is and how consumers behave.
    """

    def __init__(self, settings: EmbeddedSettings) -> None:
        self.settings = settings
        # Two connections on two threads: WAL lets consumers read while a publish waits for
        # its fsync. Writes (publish, commit, topics) go through the writer.
        self._store: SqliteLogStore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._reader_store: SqliteLogStore | None = None
        self._reader_executor: ThreadPoolExecutor | None = None
        # A third for reads outside consumer groups (the dashboard's tail and browser, lag,
        # replays): they never queue behind the stages' fetches, nor those behind them.
        self._browser_store: SqliteLogStore | None = None
        self._browser_executor: ThreadPoolExecutor | None = None
        self._wakers: dict[str, set[asyncio.Event]] = {}
        self._consumers: set[EmbeddedConsumer] = set()
        self._retention_task: asyncio.Task[None] | None = None

    # -- plumbing -----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            raise EventLogClosed("embedded event log is not started")
        return await self._run(self._executor, fn, *args)

    async def _read(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._reader_executor is None:
            raise EventLogClosed("embedded event log is not started")
        return await self._run(self._reader_executor, fn, *args)

    async def _browse(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._browser_executor is None:
            raise EventLogClosed("embedded event log is not started")
        return await self._run(self._browser_executor, fn, *args)

    @staticmethod
    async def _run(executor: ThreadPoolExecutor, fn: Callable[..., _T], *args: object) -> _T:
        """``fn(*args)`` on ``executor``. The store translates the errors of its writes; a read
        that finds the file locked, or a folder that cannot be made, is translated here, so
        consumers see a ``BrokerError`` they retry rather than a crash."""
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            raise BrokerError(f"embedded event log: {exc}") from exc

    @property
    def store(self) -> SqliteLogStore:
        """The writer's storage (for use inside :meth:`_call` only)."""
        if self._store is None:
            raise EventLogClosed("embedded event log is not started")
        return self._store

    @property
    def reader(self) -> SqliteLogStore:
        """The reader's storage (for use inside :meth:`_read` only)."""
        if self._reader_store is None:
            raise EventLogClosed("embedded event log is not started")
        return self._reader_store

    @property
    def browser(self) -> SqliteLogStore:
        """The storage of reads outside groups (for use inside :meth:`_browse` only)."""
        if self._browser_store is None:
            raise EventLogClosed("embedded event log is not started")
        return self._browser_store

    def _wake(self, topic: str) -> None:
        for event in self._wakers.get(topic, ()):
            event.set()

    def _wake_group(self, group: str) -> None:
        for consumer in self._consumers:
            if consumer.group == group:
                consumer.wake()

    def _register(self, topics: Sequence[str], event: asyncio.Event) -> None:
        for topic in topics:
            self._wakers.setdefault(topic, set()).add(event)

    def _unregister(self, topics: Sequence[str], event: asyncio.Event) -> None:
        for topic in topics:
            self._wakers.get(topic, set()).discard(event)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the file and create the configured topics."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventlog-write")
        self._reader_executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="eventlog-read"
        )
        self._browser_executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="eventlog-browse"
        )
        open_store = functools.partial(
            SqliteLogStore, self.settings.path, synchronous=self.settings.synchronous
        )
        self._store = await self._call(open_store)
        self._reader_store = await self._read(open_store)
        self._browser_store = await self._browse(open_store)
        for spec in self.settings.topics:
            await self.create_topic(spec.name, spec.partitions, spec.retention)
        self._retention_task = asyncio.create_task(self._retention_loop())
        _log.info("eventlog.embedded.started", path=str(self.settings.path))

    async def ping(self) -> None:
        """Read the committed offsets of no group: the file answers."""
        await self._read(self.reader.committed, "")

    def consumers(self) -> frozenset[ConsumerHandle]:
        """The group members started here and still running."""
        return frozenset(self._consumers)

    async def stop(self) -> None:
        """Stop all consumers, then close the file."""
        if self._executor is None:
            return
        for consumer in list(self._consumers):
            try:
                await consumer.stop()
            except Exception as exc:  # it crashed earlier and was logged; stop the rest
                _log.warning("eventlog.consumer_stop_failed", group=consumer.group, error=repr(exc))
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        await self._call(self.store.close)
        await self._read(self.reader.close)
        await self._browse(self.browser.close)
        self._executor.shutdown(wait=True)
        for executor in (self._reader_executor, self._browser_executor):
            if executor is not None:
                executor.shutdown(wait=True)
        self._executor = self._reader_executor = self._browser_executor = None
        self._store = self._reader_store = self._browser_store = None

    async def _retention_loop(self) -> None:
        interval = self.settings.retention_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                deleted = await self.enforce_retention()
            except Exception as exc:  # keep enforcing later; a busy file is not fatal
                _log.warning("eventlog.retention_failed", error=repr(exc))
            else:
                if deleted:
                    _log.info("eventlog.retention", deleted=deleted)

    async def enforce_retention(self, now: datetime | None = None) -> int:
        """Delete records beyond the retention limits now; returns how many were deleted."""
        return await self._call(self.store.enforce_retention, now)

    # -- topics -------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = DEFAULT_PARTITIONS,
        retention: Retention | None = None,
    ) -> None:
        """Create ``name`` and its dead-letter twin; existing topics are left as they are."""
        if partitions < 1:
            raise InvalidTopic(f"topic {name!r} needs at least one partition")
        keep = retention or Retention()
        await self._call(self.store.create_topic, name, partitions, keep)
        if not name.endswith(DEADLETTER_SUFFIX):
            await self._call(self.store.create_topic, deadletter_topic(name), partitions, keep)

    async def partitions(self, topic: str) -> int:
        """Partition count of ``topic``."""
        return (await self._read(self.reader.topic, topic)).partitions

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Headers | None = None
    ) -> Record:
        """Publish one message; returns once it is committed to the file."""
        return (await self.publish_many(topic, [OutgoingMessage(key, value, headers or ())]))[0]

    async def publish_many(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[Record]:
        """Publish messages in one transaction; returns once it is committed."""
        if not messages:
            return []
        records = await self._call(self.store.append, topic, list(messages))
        PUBLISHED.labels(topic).inc(len(records))
        self._wake(topic)
        return records

    # -- consuming ----------------------------------------------------------------------

    async def consume(
        self,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        *,
        options: ConsumerOptions | None = None,
        validate: Validator | None = None,
    ) -> EmbeddedConsumer:
        """Join ``group`` on ``topics`` and handle batches until the handle is stopped."""
        for topic in topics:
            await self._read(self.reader.topic, topic)
        consumer = EmbeddedConsumer(
            self, tuple(topics), group, handler, options or ConsumerOptions(), validate
        )
        self._consumers.add(consumer)
        await consumer.start()
        return consumer

    def _forget(self, consumer: EmbeddedConsumer) -> None:
        self._consumers.discard(consumer)

    async def lag(self, group: str) -> dict[tuple[str, int], int]:
        """Uncommitted records of ``group`` per partition it committed to or subscribes to."""
        return await self._read(self._lag, group)

    def _lag(self, group: str) -> dict[tuple[str, int], int]:
        store = self.reader
        committed = store.committed(group)
        topics = {t for t, _ in committed} | {t for m in store.members(group) for t in m.topics}
        result = {}
        for topic in sorted(topics):
            for partition, (start, end) in store.bounds(topic).items():
                done = max(committed.get((topic, partition), start), start)
                result[(topic, partition)] = end - done
        return result

    async def reset_offsets(
        self,
        group: str,
        topic: str,
        *,
        offset: int | None = None,
        since: datetime | None = None,
    ) -> dict[int, int]:
        """Set ``group``'s committed offsets on ``topic`` to ``offset`` or the time ``since``."""
        if (offset is None) == (since is None):
            raise InvalidTopic("give exactly one of offset or since")
        result = await self._call(self._reset, group, topic, offset, since)
        self._wake_group(group)
        return result

    def _reset(
        self, group: str, topic: str, offset: int | None, since: datetime | None
    ) -> dict[int, int]:
        store = self.store
        targets = {}
        for partition, (start, end) in store.bounds(topic).items():
            if since is not None:
                target = store.offset_for_time(topic, partition, since)
            else:
                target = min(max(offset or 0, start), end)
            targets[partition] = target
        store.commit(group, None, {(topic, p): o for p, o in targets.items()})
        return targets

    async def read(
        self,
        topic: str,
        partition: int,
        *,
        offset: int | None = None,
        since: datetime | None = None,
        limit: int = DEFAULT_BATCH_SIZE,
    ) -> list[Record]:
        """Read up to ``limit`` records of one partition from ``offset`` or time ``since``."""

        def read_sync() -> list[Record]:
            start = offset or 0
            if since is not None:
                start = self.browser.offset_for_time(topic, partition, since)
            return self.browser.fetch(topic, partition, start, limit)

        await self._browse(self.browser.topic, topic)
        return await self._browse(read_sync)

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to be written, per partition."""
        bounds = await self._browse(self.browser.bounds, topic)
        return {p: end for p, (_, end) in bounds.items()}


@dataclass
class _MemberState:
    generation: int = -1
    assignment: frozenset[tuple[str, int]] = frozenset()
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    last_heartbeat: float = 0.0
    rotation: int = 0


class EmbeddedConsumer:
    """A member of a consumer group on the embedded log (see :meth:`EmbeddedEventLog.consume`)."""

    def __init__(
        self,
        log: EmbeddedEventLog,
        topics: tuple[str, ...],
        group: str,
        handler: Handler,
        options: ConsumerOptions,
        validate: Validator | None,
    ) -> None:
        self._log = log
        self._topics = topics
        self._group = group
        self._options = options
        self._member = f"{group}-{uuid.uuid4().hex[:12]}"
        self._state = _MemberState()
        self._wake_event = asyncio.Event()
        self._stopping = asyncio.Event()
        self._joined = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._processor = BatchProcessor(
            group=group,
            handler=handler,
            validate=validate,
            retry=options.retry,
            dead_letter=dead_letter_sink(log),
            stopping=self._stopping,
        )

    @property
    def group(self) -> str:
        """The consumer group."""
        return self._group

    @property
    def member_id(self) -> str:
        """This member's id in the group."""
        return self._member

    def assignment(self) -> frozenset[tuple[str, int]]:
        """Partitions this member reads now."""
        return self._state.assignment

    def wake(self) -> None:
        """Look for new records or a new assignment now."""
        self._wake_event.set()

    async def start(self) -> None:
        """Join the group and start the consume loop."""
        settings = self._log.settings
        timeout_ms = int(settings.session_timeout.total_seconds() * 1000)
        await self._log._call(
            self._log.store.join, self._group, self._member, self._topics, timeout_ms
        )
        self._log._register(self._topics, self._wake_event)
        self._log._wake_group(self._group)
        self._task = asyncio.create_task(self._run(), name=f"consumer {self._member}")

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, leave the group."""
        self._stopping.set()
        self._wake_event.set()
        if self._task is not None:
            await self._task

    async def wait_assigned(self) -> frozenset[tuple[str, int]]:
        """Wait until this member has joined its group; returns its partitions."""
        await self._joined.wait()
        return self._state.assignment

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._loop()
                    return
                except BrokerError as exc:  # e.g. the file stayed locked: try again
                    _log.warning("eventlog.consumer_error", member=self._member, error=str(exc))
                    self._state.generation = -2  # re-read assignment and committed offsets
                    if await pause(self._stopping, TRANSIENT_RETRY_SECONDS):
                        return
        except Exception:
            _log.exception("eventlog.consumer_crashed", member=self._member)
            raise
        finally:
            self._log._unregister(self._topics, self._wake_event)
            self._log._forget(self)
            with contextlib.suppress(EventLogClosed):
                await self._log._call(self._log.store.leave, self._group, self._member)
            self._log._wake_group(self._group)

    async def _loop(self) -> None:
        poll = self._log.settings.poll_interval.total_seconds()
        max_wait = self._options.max_wait.total_seconds()
        while not self._stopping.is_set():
            self._wake_event.clear()
            records = await self._log._read(self._poll)
            self._joined.set()
            if not records:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_event.wait(), timeout=poll)
                continue
            if max_wait and len(records) < self._options.batch_size:
                await asyncio.sleep(max_wait)
                records = await self._log._read(self._poll)
            if not await self._processor.process(records):
                return
            offsets: dict[tuple[str, int], int] = {}
            for record in records:
                offsets[(record.topic, record.partition)] = record.offset + 1
            generation = self._state.generation
            committed = await self._log._call(
                self._log.store.commit, self._group, generation, offsets
            )
            if committed:
                self._state.positions.update(offsets)
            else:
                # The group moved on while we worked: another member may own these partitions
                # now and will redo the batch from the last commit (at-least-once).
                _log.info("eventlog.commit_refused", member=self._member, group=self._group)
                self._state.generation = -2

    def _poll(self) -> list[Record]:
        """Runs in the reader thread: heartbeat, follow rebalances, fetch a batch."""
        self._sync_membership()
        return self._fetch()

    def _sync_membership(self) -> None:
        store = self._log.reader
        state = self._state
        settings = self._log.settings
        now = time.monotonic()
        generation = store.generation(self._group)
        if now - state.last_heartbeat >= settings.heartbeat_interval.total_seconds():
            timeout_ms = int(settings.session_timeout.total_seconds() * 1000)
            beat = store.heartbeat(self._group, self._member, timeout_ms)
            if beat is None:
                beat = store.join(self._group, self._member, self._topics, timeout_ms)
            generation = beat
            state.last_heartbeat = now
        if generation == state.generation:
            return
        generation, assignment = store.assignment(self._group, self._member)
        if assignment != state.assignment:
            REBALANCES.labels(self._group).inc()
            _log.info(
                "eventlog.assigned",
                member=self._member,
                group=self._group,
                partitions=sorted(assignment),
            )
        state.generation = generation
        state.assignment = assignment
        committed = store.committed(self._group)
        state.positions = {}
        for topic, partition in assignment:
            start, end = store.bounds(topic)[partition]
            default = start if self._options.start_from == "earliest" else end
            state.positions[(topic, partition)] = committed.get((topic, partition), default)

    def _fetch(self) -> list[Record]:
        store = self._log.reader
        state = self._state
        parts = sorted(state.assignment)
        if not parts:
            return []
        state.rotation = (state.rotation + 1) % len(parts)
        parts = parts[state.rotation :] + parts[: state.rotation]
        batch: list[Record] = []
        for topic, partition in parts:
            room = self._options.batch_size - len(batch)
            if room <= 0:
                break
            position = state.positions[(topic, partition)]
            records = store.fetch(topic, partition, position, room)
            if records and records[0].offset > position:
                state.positions[(topic, partition)] = records[0].offset  # trimmed by retention
            batch.extend(records)
        return batch
