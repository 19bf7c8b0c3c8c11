"""The statistics stage in Kafka mode: a faust app (``fhirbots worker stats``).

It computes what :class:`fhirbots.engine.stages.stats.StatsStage` computes in embedded mode, with
the same per-record code (:func:`~fhirbots.engine.stages.stats.facts_of`), and writes the same
rows to the observatory store, so the dashboard cannot tell the modes apart.

* **Agents.** One per source topic (changes, notifications, deliveries, executions; raw bytes,
  decoded by :func:`~fhirbots.engine.stages.stats.decode`), in batches. A record's trace step
  and kept execution record are stored before its offset is acknowledged; its count goes into
  the windowed table; a record that does not decode goes to the topic's dead-letter twin.
* **The table.** ``windows``, tumbling :data:`~fhirbots.engine.observatory.model.WINDOW` wide
  at the record's event time (the time the embedded stage counts it at), expiring
  :data:`~fhirbots.engine.observatory.windows.GRACE` after its end. Key: the series
  ``[partition, project, metric, *dims]`` (a JSON string); value ``[count, total_ms,
  offset, *buckets]``: the events, the sum of their durations, the offset of the last one
  counted (a record processed again is not counted again, see :func:`add_counts`) and the
  duration histogram, one count per bucket of
  :data:`~fhirbots.engine.observatory.model.DURATION_BUCKETS_MS` (none for metrics without
  durations). The source partition is part of the key: the table is co-partitioned with the
  four topics (same partition count), each key's changelog partition is the partition it was
  counted from, and two partitions of one series never share a value. The store adds up the
  rows of all partitions.
* **Window close.** faust looks for expired windows every ``close_every`` (its table cleanup
  interval) and calls ``on_window_close`` for each: a window closes once the wall clock is
  ``GRACE`` past its end, so a record with an old event time closes at the next look. Closed
  rows are written to the store (``add_windows``) on a timer, then deleted from the changelog.
* **Restarts and rebalances.** The windows still open live in the changelog topic (kept for
  the retention); whoever owns a partition next restores them and closes them when due.
* **Timers.** Besides the close timer on every worker, the leader samples consumer lag and
  purges what is older than the retention (:class:`~fhirbots.engine.stages.stats.Upkeep`).

Scaling: the app id is the consumer group; faust assigns partition *n* of the four topics and of
the changelog to the same worker, so workers added to the group split the partitions
(:data:`~fhirbots.engine.eventlog.port.DEFAULT_PARTITIONS`, so up to eight workers).
Counts are at-least-once: a record processed again after a crash is counted again.

Run it with ``fhirbots worker stats`` (``FHIRBOTS_KAFKA`` set), or with renamed topics::

    python -m fhirbots.engine.stages.stats_faust --app-id stats-test \\
        --topics changes,notifications,deliveries,executions --partitions 2
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
import structlog
from faust.tables.wrappers import WindowWrapper

from fhirbots.engine.eventlog.errors import InvalidTopic
from fhirbots.engine.eventlog.factory import create_event_log
from fhirbots.engine.eventlog.faust_app import FaustSettings, new_app, run_in_loop, to_record
from fhirbots.engine.eventlog.port import DEFAULT_PARTITIONS, EventLog, OutgoingMessage, Record
from fhirbots.engine.eventlog.processing import dead_letter_message, dead_letter_sink
from fhirbots.engine.eventlog.security import KafkaSecurity
from fhirbots.engine.observatory.factory import create_observatory_store
from fhirbots.engine.observatory.model import DURATION_BUCKETS_MS, WINDOW, Metric, WindowRow
from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.engine.observatory.windows import GRACE, bucket_of, window_start
from fhirbots.engine.settings import Settings
from fhirbots.engine.stages.stats import (
    FOLDED,
    STATS_GROUP,
    TICK,
    Count,
    Folded,
    Upkeep,
    decode,
    facts_of,
)
from fhirbots.schemas.topics import (
    BOT_EXECUTIONS,
    CHANGES,
    DELIVERIES,
    NOTIFICATIONS,
    deadletter_topic,
)

__all__ = [
    "STATS_APP_ID",
    "WINDOWS_TABLE",
    "StatsApp",
    "StatsAppSettings",
    "StatsTopics",
    "add_counts",
    "closed_row",
    "count_delta",
    "main",
    "run_stats_app",
    "series_key",
    "serve",
]

log = structlog.get_logger(__name__)

STATS_APP_ID = STATS_GROUP
"""faust app id, hence consumer group, of the statistics app: the group the embedded stage
uses, so the dashboard's lag chart shows the statistics stage under one name in both modes."""

WINDOWS_TABLE = "windows"
"""The windowed table; its changelog topic is ``<app id>-windows-changelog``."""

BATCH_SIZE = 500
"""Records an agent takes at once: trace steps of a batch go to the store in one write."""

BATCH_WAIT = timedelta(milliseconds=100)
"""Longest an agent waits to fill a batch: how late a trace step may appear."""

RETRY_CEILING = timedelta(seconds=30)
"""Longest pause between two attempts to write to an unavailable store (doubling from
half a second). The agent does not move past records it could not store."""


@dataclass(frozen=True)
class StatsTopics:
    """The source topics by role; defaults are the deployment's topic names (tests rename
    them to get topics of their own)."""

    changes: str = CHANGES
    """Change events."""

    notifications: str = NOTIFICATIONS
    """Notifications."""

    deliveries: str = DELIVERIES
    """Delivery attempts."""

    executions: str = BOT_EXECUTIONS
    """Bot execution records."""

    def sources(self) -> dict[str, str]:
        """Topic name -> the source (one of :data:`~fhirbots.engine.stages.stats.SOURCES`) it
        carries, which decides how its records are decoded."""
        return {
            self.changes: CHANGES,
            self.notifications: NOTIFICATIONS,
            self.deliveries: DELIVERIES,
            self.executions: BOT_EXECUTIONS,
        }


@dataclass(frozen=True)
class StatsAppSettings:
    """Settings of the statistics app.

    Attributes:
        faust: App id (consumer group), broker, faust's folder, partitions, timeouts.
        retention: How long the store keeps what the app writes; also how long the changelog
            keeps a window (a worker down longer loses the windows it had open).
        lag_groups: Consumer groups whose lag the leader samples.
        topics: The source topics.
        close_every: How often closed windows are looked for and written.
        batch_size: See :data:`BATCH_SIZE`.
        batch_wait: See :data:`BATCH_WAIT`.
    """

    faust: FaustSettings
    retention: timedelta = timedelta(days=7)
    lag_groups: tuple[str, ...] = ()
    topics: StatsTopics = StatsTopics()
    close_every: timedelta = TICK
    batch_size: int = BATCH_SIZE
    batch_wait: timedelta = BATCH_WAIT

    @classmethod
    def from_settings(
        cls, settings: Settings, *, lag_groups: Sequence[str] = (STATS_APP_ID,)
    ) -> StatsAppSettings:
        """The deployment's statistics app: topics and app id by their names, faust's files
        in ``<data dir>/faust``.

        Raises:
            ValueError: ``settings`` name no Kafka broker.
        """
        if not settings.kafka:
            raise ValueError("the statistics app runs in Kafka mode: set FHIRBOTS_KAFKA")
        return cls(
            faust=FaustSettings(
                app_id=STATS_APP_ID,
                bootstrap=settings.kafka,
                data_dir=settings.data_dir / "faust",
                security=KafkaSecurity.from_settings(settings),
                shutdown_timeout=timedelta(seconds=settings.shutdown_grace_seconds),
            ),
            retention=settings.retention,
            lag_groups=tuple(lag_groups),
        )


def series_key(partition: int, count: Count) -> str:
    """Table key of the series ``count`` belongs to, as counted from ``partition``."""
    return json.dumps([partition, count.project, count.metric, *count.dims])


@functools.lru_cache(maxsize=4096)
def _parse_series(key: str) -> tuple[int, str, Metric, tuple[str, ...]]:
    partition, project, metric, *dims = json.loads(key)
    return int(partition), str(project), cast(Metric, metric), tuple(map(str, dims))


_COUNT, _TOTAL_MS, _OFFSET, _BUCKETS = 0, 1, 2, 3
"""Positions in a window's value."""


def count_delta(count: Count, offset: int) -> list[float]:
    """What the event at ``offset`` of its partition adds to its window's value
    ``[count, total_ms, offset, *buckets]``."""
    if count.duration_ms is None:
        return [1, 0.0, offset]
    buckets: list[float] = [0] * (len(DURATION_BUCKETS_MS) + 1)
    buckets[bucket_of(count.duration_ms)] = 1
    return [1, count.duration_ms, offset, *buckets]


def add_counts(value: list[float], delta: list[float]) -> list[float]:
    """A window's value with one more event (:func:`count_delta`), unless that event was
    counted already.

    A worker processes the records of a partition in offset order, and every record of a
    window's key comes from one partition; so an event whose offset is not past the last one
    counted is one processed again (faust commits offsets every second: a rebalance or a
    restart replays what came after). Counting stays exact while the window is open.
    """
    if not value:
        return list(delta)
    if delta[_OFFSET] <= value[_OFFSET]:
        return value
    summed = [value[_COUNT] + delta[_COUNT], value[_TOTAL_MS] + delta[_TOTAL_MS], delta[_OFFSET]]
    old, new = value[_BUCKETS:], delta[_BUCKETS:]
    if len(old) < len(new):  # a window that had no durations yet has no buckets yet
        old, new = new, old
    return summed + [x + (new[i] if i < len(new) else 0) for i, x in enumerate(old)]


def closed_row(key: str, start: float, value: Sequence[float]) -> tuple[int, WindowRow]:
    """The partition and the :class:`WindowRow` of a closed window of the table."""
    partition, project, metric, dims = _parse_series(key)
    return partition, WindowRow(
        project,
        metric,
        dims,
        window_start(datetime.fromtimestamp(start, UTC)),
        int(value[_COUNT]),
        float(value[_TOTAL_MS]),
        tuple(int(b) for b in value[_BUCKETS:]),
    )


class _WindowTable(faust.Table[Any, Any]):
    """faust's table with what this app needs of a windowed one (faust 0.15 internals).

    * faust skips ``on_window_close`` for a window not later than the latest one it closed,
      across all partitions: the same window of a second partition, a late record, a window
      restored after a restart would never be reported. This table reports every one.
    * A key's changelog partition is the partition in the key (:func:`series_key`), so
      counting does not depend on which event faust considers current.
    * faust forgets when restored windows expire; they are scheduled again after recovery.
    * Windows of partitions moved to another worker are dropped here (the new owner restores
      them from the changelog), instead of being reported by both.
    """

    def __init__(self, *args: Any, sources: Collection[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sources = frozenset(sources)

    @property
    def last_closed_window(self) -> float:
        """Always 0: no window is skipped (see the class docstring)."""
        return 0.0

    @last_closed_window.setter
    def last_closed_window(self, value: float) -> None:
        pass

    def partition_for_key(self, key: Any) -> int:
        series, _window = key
        return _parse_series(series)[0]

    async def on_rebalance(
        self,
        assigned: set[Any],
        revoked: set[Any],
        newly_assigned: set[Any],
        generation_id: int = 0,
    ) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        kept = {tp.partition for tp in assigned if tp.topic in self._sources}
        for key in [k for k in self.data if self.partition_for_key(k) not in kept]:
            self.data.pop(key, None)

    async def on_recovery_completed(self, active_tps: set[Any], standby_tps: set[Any]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        for key in list(self.data):
            self._maybe_set_key_ttl(key, self.partition_for_key(key))


class StatsApp:
    """The faust app of the statistics stage and what it writes to.

    Args:
        settings: The app's settings.
        store: The observatory store, open.
        event_log: The Kafka event log, started (lag sampling, dead letters).
    """

    def __init__(
        self, settings: StatsAppSettings, store: ObservatoryStore, event_log: EventLog
    ) -> None:
        self.settings = settings
        self.store = store
        self.event_log = event_log
        self._dead_letter = dead_letter_sink(event_log)
        self._closed: list[tuple[int, Any, WindowRow]] = []
        self.app = new_app(
            settings.faust,
            table_cleanup_interval=settings.close_every.total_seconds(),
            # A stopping worker does not wait for the records in flight: their agents may be
            # cancelled mid-batch and never acknowledge them, and the next owner of their
            # partitions processes them again without counting or storing anything twice.
            stream_wait_empty=False,
        )
        sources = settings.topics.sources()
        self.table = _WindowTable(
            self.app,
            name=WINDOWS_TABLE,
            default=list,
            partitions=settings.faust.partitions,
            on_window_close=self._on_window_close,
            extra_topic_configs={
                "retention.ms": str(int(settings.retention.total_seconds()) * 1000)
            },
            beacon=self.app.tables.beacon,
            sources=sources,
        )
        self.app.tables.add(self.table)
        self.windows = cast(WindowWrapper, self.table.tumbling(WINDOW, expires=GRACE))
        self.upkeep = Upkeep(
            store,
            retention=settings.retention,
            lag_groups=settings.lag_groups,
            lag_ignores={self.table.changelog_topic.get_topic_name()},
        )
        for topic, source in sources.items():
            channel = self.app.topic(
                topic,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=settings.faust.partitions,
            )
            self.app.agent(channel, name=f"stats-{source}", concurrency=1)(self._agent(source))
        self.app.timer(settings.close_every.total_seconds(), name="stats-close")(self._close_timer)
        self.app.timer(TICK.total_seconds(), on_leader=True, name="stats-upkeep")(
            self._upkeep_timer
        )

    def _agent(self, source: str) -> Callable[[Any], Awaitable[None]]:
        size, wait = self.settings.batch_size, self.settings.batch_wait.total_seconds()

        async def agent(stream: Any) -> None:
            async for events in stream.take_events(size, wait):
                await self.handle([to_record(event) for event in events], source)

        return agent

    async def handle(self, records: Sequence[Record], source: str) -> None:
        """Count a batch of one source topic in the table and store its trace steps and kept
        execution records (returns once they are stored)."""
        out = Folded()
        poison: list[OutgoingMessage] = []
        for record in records:
            try:
                payload = decode(record, source)
            except ValueError as exc:  # pydantic's ValidationError is one
                poison.append(dead_letter_message(record, exc))
                continue
            facts = facts_of(record, payload)
            self.count(record, facts.count)
            out.add(facts)
            FOLDED.labels(record.topic).inc()
        if poison:
            log.warning("statistics: records that do not decode", topic=records[0].topic)
            topic = deadletter_topic(records[0].topic)
            await self._persist("dead letters", lambda: self._dead_letter(topic, poison))
        if out.activity:
            await self._persist("trace steps", lambda: self.store.add_activity(out.activity))
        if out.executions:
            await self._persist("executions", lambda: self.store.add_executions(out.executions))

    def count(self, record: Record, count: Count) -> None:
        """Add the event of ``record`` to its window (at its event time) in the table."""
        at_event_time = self.windows.relative_to(count.at)
        delta = count_delta(count, record.offset)
        at_event_time[series_key(record.partition, count)].apply(add_counts, delta)

    async def _persist(self, what: str, write: Callable[[], Awaitable[object]]) -> None:
        delay = 0.5
        while True:
            try:
                await write()
                return
            except Exception:
                log.exception("statistics: cannot store; trying again", what=what, after=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_CEILING.total_seconds())

    def _on_window_close(self, key: Any, value: Any) -> None:
        if not value:  # dropped on a rebalance: its new owner reports it
            return
        series, (start, _end) = key
        partition, row = closed_row(series, start, value)
        self._closed.append((partition, key, row))

    async def write_closed(self) -> int:
        """Write the windows closed since the last call to the store, then delete them from the
        changelog (so a restart does not restore them); returns how many were written.

        Rows that could not be written are kept for the next call. Rows still here when the
        worker stops are not lost: their windows are still in the changelog, and the next
        owner of their partitions closes them again.
        """
        closed, self._closed = self._closed, []
        if not closed:
            return 0
        try:
            await self.store.add_windows([row for _, _, row in closed])
        except Exception:
            self._closed[:0] = closed
            log.exception("statistics: cannot store closed windows; trying again", rows=len(closed))
            return 0
        for partition, key, _row in closed:
            self.table.send_changelog(partition, key, None, value_serializer="raw")
        return len(closed)

    async def _close_timer(self, _app: Any) -> None:
        await self.write_closed()

    async def _upkeep_timer(self, _app: Any) -> None:
        try:
            await self.upkeep.run(self.event_log, datetime.now(UTC))
        except Exception:
            log.exception("statistics upkeep failed; trying again next tick")


async def create_sources(event_log: EventLog, topics: StatsTopics, partitions: int) -> None:
    """Create the source topics (existing ones are left as they are) and check that each has
    ``partitions`` partitions, which faust needs to co-partition the table with them.

    Raises:
        InvalidTopic: A source topic has another partition count.
    """
    wrong = {}
    for topic in topics.sources():
        await event_log.create_topic(topic, partitions=partitions)
        count = await event_log.partitions(topic)
        if count != partitions:
            wrong[topic] = count
    if wrong:
        raise InvalidTopic(
            f"the statistics app needs {partitions} partitions on each source topic, like its "
            f"table; these have others: {wrong}"
        )


async def run_stats_app(
    settings: StatsAppSettings,
    store: ObservatoryStore,
    event_log: EventLog,
    *,
    loglevel: str = "WARNING",
) -> None:
    """Run the statistics app in this event loop until SIGTERM or SIGINT.

    Args:
        settings: The app's settings.
        store: The observatory store, open (the caller closes it).
        event_log: The Kafka event log, started (the caller stops it).
        loglevel: faust's log level.

    Raises:
        InvalidTopic: See :func:`create_sources`.
    """
    await create_sources(event_log, settings.topics, settings.faust.partitions)
    stats = StatsApp(settings, store, event_log)
    log.info("statistics app starting", app_id=settings.faust.app_id)
    await run_in_loop(stats.app, settings.faust, loglevel=loglevel)


async def serve(settings: Settings, app_settings: StatsAppSettings, *, loglevel: str) -> None:
    """Open the store and the event log ``settings`` name, run the app, close them."""
    store = create_observatory_store(
        settings.database_url, settings.data_dir, migrate=settings.migrates_on_start
    )
    event_log = create_event_log(
        kafka_bootstrap=app_settings.faust.bootstrap,
        data_dir=settings.data_dir,
        client_id=app_settings.faust.app_id,
        security=app_settings.faust.security,
    )
    await store.open()
    try:
        await event_log.start()
        try:
            await run_stats_app(app_settings, store, event_log, loglevel=loglevel)
        finally:
            await event_log.stop()
    finally:
        await store.close()


def _topics(value: str) -> StatsTopics:
    names = [name.strip() for name in value.split(",")]
    if len(names) != 4 or not all(names):
        raise argparse.ArgumentTypeError(
            "four topic names: changes,notifications,deliveries,executions"
        )
    return StatsTopics(*names)


def main(argv: Iterable[str] | None = None) -> None:
    """Command line: run the statistics app with the ``FHIRBOTS_*`` settings (the broker, the
    data dir, the store, the retention) and the flags."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--app-id", default=STATS_APP_ID, help="faust app id (consumer group)")
    parser.add_argument(
        "--topics",
        type=_topics,
        default=StatsTopics(),
        help="changes,notifications,deliveries,executions",
    )
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--close-every", type=float, default=TICK.total_seconds(), help="seconds")
    parser.add_argument("--session-timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--lag-group", action="append", default=[], help="default: the app id")
    parser.add_argument("--loglevel", default="WARNING")
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=args.loglevel)
    settings = Settings.from_env()
    base = StatsAppSettings.from_settings(settings, lag_groups=args.lag_group or [args.app_id])
    app_settings = dataclasses.replace(
        base,
        faust=dataclasses.replace(
            base.faust,
            app_id=args.app_id,
            partitions=args.partitions,
            session_timeout=timedelta(seconds=args.session_timeout),
            heartbeat_interval=timedelta(seconds=max(args.session_timeout / 6, 0.5)),
        ),
        topics=args.topics,
        close_every=timedelta(seconds=args.close_every),
    )
    asyncio.run(serve(settings, app_settings, loglevel=args.loglevel))


if __name__ == "__main__":
    main()
