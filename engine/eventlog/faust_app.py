"""Runs a stream-processing stage as a faust-streaming agent (Kafka mode).

A :class:`Stage` names a source topic, an optional sink topic and an async handler that gets
each record with a :class:`StageContext` and returns the messages to publish. Per-key state
(for example the event counter of a subscription) lives in a faust table backed by a
changelog topic, so a restarted or rebalanced worker continues the count where it stopped.

Run a stage in its own process with :mod:`fhirbots.engine.eventlog.faust_worker` (it stops within
seconds of SIGTERM).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import structlog
from mode.threads import WorkerThread

from fhirbots.engine.eventlog.port import DEFAULT_PARTITIONS, OutgoingMessage, Record
from fhirbots.engine.eventlog.security import KafkaSecurity

__all__ = [
    "FaustSettings",
    "Stage",
    "StageContext",
    "StageHandler",
    "build_app",
    "new_app",
    "new_worker",
    "run_in_loop",
    "run_worker",
    "to_record",
]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FaustSettings:
    """Settings of a faust worker.

    Attributes:
        app_id: Faust application id: the consumer group and the prefix of its changelog
            topics. Each stage gets its own.
        bootstrap: ``host:port`` of the Kafka brokers.
        data_dir: Folder for faust's local files.
        partitions: Partitions of the source topic; the counter table's changelog gets as
            many (faust requires tables to be co-partitioned with their stream).
        replication_factor: Replicas of the changelog topics faust creates.
        session_timeout: A worker silent this long loses its partitions.
        heartbeat_interval: How often it heartbeats.
        commit_interval: How often processed offsets are committed (at-least-once).
        recovery_delay: Pause after a rebalance before tables recover from changelogs.
        shutdown_timeout: Longest a worker spends stopping after SIGTERM before it exits anyway.
        security: TLS and SASL of the connections to the brokers.
    """

    app_id: str
    bootstrap: str
    data_dir: Path
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = 1
    session_timeout: timedelta = timedelta(seconds=10)
    heartbeat_interval: timedelta = timedelta(seconds=3)
    commit_interval: timedelta = timedelta(seconds=1)
    recovery_delay: timedelta = timedelta(seconds=0)
    shutdown_timeout: timedelta = timedelta(seconds=8)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)


class StageContext:
    """What a stage handler may use besides the record: the per-key counters."""

    def __init__(self, counters: Any, record: Record) -> None:
        self._counters = counters
        self._record = record

    def increment(self, by: int = 1) -> int:
        """Add ``by`` to the counter of the current record's key; returns the new value.

        The counter is stored in a changelog-backed table on the record's partition, so it
        survives restarts and follows the partition to another worker.
        """
        value = int(self._counters[self._record.key]) + by
        self._counters[self._record.key] = value
        return value

    def count(self, key: str | None = None) -> int:
        """Current counter of ``key`` (default: the current record's key)."""
        return int(self._counters[key if key is not None else self._record.key])


StageHandler = Callable[[StageContext, Record], Awaitable[Sequence[OutgoingMessage]]]
"""Handles one record; the returned messages are published to the stage's sink topic."""


@dataclass(frozen=True)
class Stage:
    """A stream-processing stage.

    Attributes:
        name: Stage name (used for the agent and its counter table).
        source: Topic it reads.
        handler: What it does with each record.
        sink: Topic its output goes to; None if it publishes nothing.
        concurrency: Agent instances per worker (order per partition holds only with 1).
    """

    name: str
    source: str
    handler: StageHandler
    sink: str | None = None
    concurrency: int = 1
    counters_table: str = field(default="counters")


def to_record(event: Any) -> Record:
    """The :class:`Record` of a faust event read with the raw serializers."""
    message = event.message
    key = message.key.decode() if isinstance(message.key, bytes) else str(message.key or "")
    headers = tuple((str(k), bytes(v or b"")) for k, v in (message.headers or ()))
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=key,
        value=bytes(message.value or b""),
        headers=headers,
        timestamp=datetime.fromtimestamp(message.timestamp, UTC),
    )


def new_app(settings: FaustSettings, **conf: Any) -> faust.App:
    """A faust app configured from ``settings`` the way every fhirbots faust app is: tables in
    memory rebuilt from their changelogs, acks from all replicas, no web server.

    Args:
        settings: Broker, app id, partitions and timeouts.
        conf: More faust settings (e.g. ``table_cleanup_interval``).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        store="memory://",  # state is rebuilt from the changelog topic on start
        datadir=str(settings.data_dir),
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout.total_seconds(),
        broker_heartbeat_interval=settings.heartbeat_interval.total_seconds(),
        broker_commit_interval=settings.commit_interval.total_seconds(),
        stream_recovery_delay=settings.recovery_delay.total_seconds(),
        broker_credentials=settings.security.faust_credentials(),
        **conf,
    )


def build_app(settings: FaustSettings, stage: Stage) -> faust.App:
    """A faust app running ``stage`` as an agent, with its counter table.

    Args:
        settings: Broker, app id, partitions and timeouts.
        stage: The stage to run.

    Returns:
        The app; run it with :func:`run_worker` (or ``faust.Worker``).
    """
    app = new_app(settings)
    source = app.topic(
        stage.source,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    sink = (
        app.topic(stage.sink, key_serializer="raw", value_serializer="raw") if stage.sink else None
    )
    counters = app.Table(
        f"{stage.name}-{stage.counters_table}",
        default=int,
        partitions=settings.partitions,
        key_type=str,
        value_type=int,
    )

    async def agent(stream: Any) -> None:
        async for event in stream.events():
            record = to_record(event)
            outputs = await stage.handler(StageContext(counters, record), record)
            if sink is not None:
                for message in outputs:
                    await sink.send(
                        key=message.key.encode(), value=message.value, headers=list(message.headers)
                    )

    app.agent(source, name=stage.name, concurrency=stage.concurrency)(agent)
    return app


def run_worker(settings: FaustSettings, stage: Stage, *, loglevel: str = "WARNING") -> None:
    """Run ``stage`` in a faust worker until SIGTERM or SIGINT (blocks; exits the process
    within ``settings.shutdown_timeout``, see :func:`new_worker`)."""
    worker = new_worker(build_app(settings, stage), settings, loglevel=loglevel)
    _log.info("faust.worker.start", app_id=settings.app_id, stage=stage.name)
    worker.execute_from_commandline()


def new_worker(
    app: faust.App,
    settings: FaustSettings,
    *,
    loglevel: str = "WARNING",
    loop: asyncio.AbstractEventLoop | None = None,
) -> faust.Worker:
    """A faust worker for ``app`` that stops on SIGTERM or SIGINT.

    faust stops its services one by one and can wait on the broker for a long time; a
    watchdog armed by the first SIGTERM/SIGINT ends the process after
    ``settings.shutdown_timeout`` in any case. Nothing is lost by that: offsets not yet
    committed are processed again by the next owner of the partitions (at-least-once).

    Args:
        app: The app to run.
        settings: Its settings (the shutdown deadline).
        loglevel: faust's log level.
        loop: The running event loop, to run the worker in it with ``await worker.start()``
            (it returns when the worker has stopped); None for ``execute_from_commandline()``,
            which runs a loop of its own.
    """
    worker = faust.Worker(
        app, loglevel=loglevel, redirect_stdouts=False, override_logging=False, loop=loop
    )
    patched: Any = worker  # mode's Worker has no hook for a shutdown deadline
    schedule_shutdown = worker._schedule_shutdown

    def shutdown_with_deadline(signum: signal.Signals) -> None:
        _arm_watchdog(settings.shutdown_timeout)
        schedule_shutdown(signum)

    patched._schedule_shutdown = shutdown_with_deadline
    return worker


async def run_in_loop(
    app: faust.App, settings: FaustSettings, *, loglevel: str = "WARNING"
) -> None:
    """Run ``app`` in a faust worker in the running event loop until SIGTERM or SIGINT (the
    watchdog of :func:`new_worker` included); for entry points that run an event loop already.

    Raises:
        BaseException: Whatever crashed the worker, if something did.
    """
    worker = new_worker(app, settings, loglevel=loglevel, loop=asyncio.get_running_loop())
    await worker.start()  # returns once the worker has stopped
    # faust's consumer runs in a thread that reports its end to this loop; a loop closed
    # before it has would make the thread fail on its way out.
    deadline = time.monotonic() + settings.shutdown_timeout.total_seconds()
    for thread in threading.enumerate():
        if isinstance(thread, WorkerThread):
            await asyncio.to_thread(thread.join, max(deadline - time.monotonic(), 0))
    if worker.crash_reason is not None:
        raise worker.crash_reason


def _arm_watchdog(timeout: timedelta) -> None:
    def force_exit() -> None:
        _log.warning("faust.worker.forced_exit", after_seconds=timeout.total_seconds())
        os._exit(0)

    timer = threading.Timer(timeout.total_seconds(), force_exit)
    timer.daemon = True
    timer.start()
