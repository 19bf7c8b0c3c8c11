"""The live tail: change events, notifications, delivery attempts and bot executions as they
happen, as Server-Sent Events (``GET /api/tail``) and on the page ``/tail``.

One :class:`Tailer` per API process follows the four topics through the event-log port (so
alike on the embedded log and on Kafka): it starts at the end of every partition when the
first client subscribes, polls for new records, decodes each once and hands it to every
client, each with its own :class:`TailFilter` and always only the records of its project
(the key starts with ``project/`` and the payload names that project). It stops when the last
client leaves, and when the application shuts down.

A browser cannot show more than a few rows a second, so each client gets at most
:data:`MAX_RATE` events a second (a token bucket, picked evenly from what matched); when
records were left out it gets a ``sampled`` notice saying how many matched and how many were
sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from fhirbots.engine.dashboard.context import DASHBOARD, caller, render
from fhirbots.engine.dashboard.event_scan import KINDS
from fhirbots.engine.dashboard.events import (
    EventLogUnavailable,
    log_errors,
    mount_of,
    record_link,
    summarize,
    trace_link,
)
from fhirbots.engine.dashboard.times import instant
from fhirbots.engine.errors import BadRequest
from fhirbots.engine.eventlog.errors import TopicNotFound
from fhirbots.engine.eventlog.port import EventLog, Record
from fhirbots.engine.stages.stats import decode

__all__ = [
    "FILTER_KINDS",
    "MAX_RATE",
    "TAILER",
    "TailClient",
    "TailFilter",
    "Tailer",
    "install",
    "routes",
]

FILTER_KINDS = ("change", "notification", "delivery", "execution")
"""What the tail shows, in flow order (the ``kinds`` filter takes a comma-separated list)."""

MAX_RATE = 20
"""Events per second one client is sent at most: about what a person can still follow in a
scrolling list; more is sampled on the server and said so."""

POLL_INTERVAL = 0.5
"""Seconds between two looks at the end offsets when nothing new came: a row shows up within
half a second, and on Kafka each look is a metadata round trip per topic."""

READ_LIMIT = 500
"""Records read from one partition at once."""

MAX_BEHIND = 5000
"""Records a partition may be ahead of the tail before it skips to near the end: a tail shows
what happens now, so after a burst it jumps rather than replays minutes of the past."""

TOPIC_RECHECK = 5.0
"""Seconds between two looks for a topic that does not exist yet (bots.executions.v1 appears
with the first execution)."""

QUEUE_SIZE = 1000
"""Events waiting for one client's connection; a client that cannot keep up loses the rest
(counted in its ``sampled`` notices)."""

KEEPALIVE = 15.0
"""Seconds of silence after which a comment line is sent, so proxies keep the stream open and
a client that went away is noticed."""

REMEMBERED = 10_000
"""Notifications remembered to give their deliveries and executions the resource and the
subscription they are about (those records do not carry them)."""

log = structlog.get_logger(__name__)


def _reference(value: str | None, resource_type: str) -> str | None:
    """A filter value as the records name it: bots as ``Bot/<id>`` (``7`` or ``Bot/7``),
    subscriptions by their bare id (``s1`` or ``Subscription/s1``)."""
    if not value:
        return None
    value = value.strip()
    prefix = f"{resource_type}/"
    if resource_type == "Subscription":
        return value.removeprefix(prefix)
    return value if value.startswith(prefix) else prefix + value


@dataclass(frozen=True)
class TailFilter:
    """What one client wants to see (its project is always applied besides).

    A filter on a field a kind does not carry leaves that kind out: ``outcome=error`` shows
    executions that ended in error, not changes.

    Attributes:
        kinds: Kinds of events shown.
        resource_type: Changes, notifications, and the deliveries and executions of those
            notifications, about this resource type.
        interaction: ``create``, ``update`` or ``delete`` (the same way).
        resource_id: The resource's id (the same way).
        subscription: Notifications and deliveries of this subscription (its id), and the
            executions it triggered.
        bot: ``Bot/<id>``: its executions, the changes it wrote, the notifications and
            deliveries to it.
        outcome: A delivery's outcome (``success``, ``retry``, ``dead``) or an execution's
            status (``success``, ``error``, ``timeout``, ...); ``failed`` is anything but
            success (and skipped).
    """

    kinds: frozenset[str] = frozenset(FILTER_KINDS)
    resource_type: str | None = None
    interaction: str | None = None
    resource_id: str | None = None
    subscription: str | None = None
    bot: str | None = None
    outcome: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> TailFilter:
        """From ``kinds, type, interaction, id, subscription, bot, outcome``.

        Raises:
            BadRequest: An unknown kind or interaction.
        """
        kinds = frozenset(FILTER_KINDS)
        if query.get("kinds"):
            kinds = frozenset(k.strip() for k in query["kinds"].split(",") if k.strip())
            unknown = kinds - set(FILTER_KINDS)
            if unknown:
                raise BadRequest(
                    f"kinds: {', '.join(sorted(unknown))} is not one of {', '.join(FILTER_KINDS)}"
                )
        interaction = query.get("interaction") or None
        if interaction not in (None, "create", "update", "delete"):
            raise BadRequest("interaction must be create, update or delete")
        return cls(
            kinds=kinds,
            resource_type=(query.get("type") or "").strip() or None,
            interaction=interaction,
            resource_id=(query.get("id") or "").strip() or None,
            subscription=_reference(query.get("subscription"), "Subscription"),
            bot=_reference(query.get("bot"), "Bot"),
            outcome=(query.get("outcome") or "").strip() or None,
        )

    def as_json(self) -> dict[str, Any]:
        """The filter as the stream's first event echoes it."""
        return {
            "kinds": [k for k in FILTER_KINDS if k in self.kinds],
            "type": self.resource_type,
            "interaction": self.interaction,
            "id": self.resource_id,
            "subscription": self.subscription,
            "bot": self.bot,
            "outcome": self.outcome,
        }

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` (a summary of :func:`fhirbots.engine.dashboard.events.summarize`)
        passes."""
        if event["kind"] not in self.kinds:
            return False
        for name, wanted in (
            ("resource_type", self.resource_type),
            ("interaction", self.interaction),
            ("resource_id", self.resource_id),
            ("subscription", self.subscription),
            ("bot", self.bot),
        ):
            if wanted is not None and event.get(name) != wanted:
                return False
        if self.outcome is not None:
            got = event.get("outcome")
            if got is None:
                return False
            if self.outcome == "failed":
                return got not in ("success", "skipped")
            return bool(got == self.outcome)
        return True


class TailClient:
    """One subscriber: its project, filter, rate budget and queue of events to send.

    Args:
        project: The only project whose events it gets.
        tail_filter: What it wants.
        rate: Events per second it is sent at most.
    """

    def __init__(self, project: str, tail_filter: TailFilter, *, rate: int = MAX_RATE) -> None:
        self.project = project
        self.filter = tail_filter
        self.rate = rate
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_SIZE)
        self._tokens = float(rate)
        self._last: float | None = None

    def deliver(self, events: list[dict[str, Any]], now: float) -> None:
        """Queue what of one round of events passes, at most the rate allows (picked evenly
        over the round), and a ``sampled`` notice if some were left out."""
        matched = [e for e in events if e["project"] == self.project and self.filter.matches(e)]
        if self._last is not None:
            self._tokens = min(float(self.rate), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if not matched:
            return
        allowed = min(len(matched), int(self._tokens))
        if allowed < len(matched):
            step = len(matched) / allowed if allowed else 0.0
            chosen = [matched[int(i * step)] for i in range(allowed)]
        else:
            chosen = matched
        shown = sum(1 for event in chosen if self._put(event))
        self._tokens -= len(chosen)
        if shown < len(matched):
            self._put(
                {
                    "kind": "sampled",
                    "time": instant(datetime.now(UTC)),
                    "matched": len(matched),
                    "shown": shown,
                    "ratio": round(len(matched) / shown, 1) if shown else None,
                    "max_per_second": self.rate,
                }
            )

    def _put(self, item: dict[str, Any]) -> bool:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        return True

    def close(self) -> None:
        """End the client's stream (it reads None after what is queued, or at once when the
        queue is full)."""
        if self.queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
        self.queue.put_nowait(None)


class Tailer:
    """Follows the four topics from their end and fans each record out to the clients.

    Created once per application (by :func:`install`); its reading task starts with the
    first client and ends with the last, so an idle dashboard reads nothing.

    Args:
        event_log: The process's event log (None while it has none open).
        poll_interval: Seconds between looks when nothing new came.
        clock: Monotonic seconds (the rate budget's clock).
    """

    def __init__(
        self,
        event_log: Callable[[], EventLog | None],
        *,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._event_log = event_log
        self._poll_interval = poll_interval
        self._clock = clock
        self._clients: set[TailClient] = set()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._positions: dict[tuple[str, int], int] = {}
        self._missing: dict[str, float] = {}
        self._remembered: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._stopped = False

    @property
    def running(self) -> bool:
        """Whether the reading task runs."""
        return self._task is not None and not self._task.done()

    @property
    def clients(self) -> int:
        """How many clients are subscribed."""
        return len(self._clients)

    async def subscribe(self, project: str, tail_filter: TailFilter) -> TailClient:
        """A new client; returns once the tail reads from the current end of every topic, so
        whatever is published after this returns reaches the client (if it passes).

        Raises:
            EventLogUnavailable: No event log is open, or the application is shutting down.
        """
        event_log = self._event_log()
        if event_log is None or self._stopped:
            raise EventLogUnavailable("the live tail is not available in this process now")
        client = TailClient(project, tail_filter)
        self._clients.add(client)
        if not self.running:
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._run(event_log), name="dashboard-tail")
        task = self._task
        assert task is not None
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not self._ready.is_set():
            self._clients.discard(client)
            raise EventLogUnavailable("the live tail could not read the event log")
        return client

    def unsubscribe(self, client: TailClient) -> None:
        """Forget ``client``; the reading task ends when no client is left."""
        self._clients.discard(client)

    async def stop(self) -> None:
        """Stop reading and end every client's stream (the application shuts down)."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in list(self._clients):
            client.close()
        self._clients.clear()

    async def _run(self, event_log: EventLog) -> None:
        try:
            self._positions.clear()
            self._missing.clear()
            for topic in KINDS:
                await self._start_topic(event_log, topic, from_end=True)
            self._ready.set()
            # Checked and left without an await in between: a client subscribing meanwhile
            # either is seen here or sees the task done and starts another.
            while self._clients:
                if not await self._round(event_log):
                    await asyncio.sleep(self._poll_interval)
        except asyncio.CancelledError:
            raise
        except Exception:  # a tail that stops must say so and end its streams, not hang them
            log.exception("the live tail stopped reading the event log")
            for client in list(self._clients):
                client.close()
            self._clients.clear()

    async def _start_topic(self, event_log: EventLog, topic: str, *, from_end: bool) -> None:
        try:
            ends = await event_log.end_offsets(topic)
        except TopicNotFound:
            self._missing[topic] = self._clock() + TOPIC_RECHECK
            return
        self._missing.pop(topic, None)
        for partition, end in ends.items():
            # A topic that appeared after the tail started holds only new records.
            self._positions[(topic, partition)] = end if from_end else 0

    async def _round(self, event_log: EventLog) -> bool:
        """Read what is new on every topic and fan it out; True if more is waiting."""
        records: list[Record] = []
        more = False
        for topic in KINDS:
            if topic in self._missing:
                if self._clock() >= self._missing[topic]:
                    await self._start_topic(event_log, topic, from_end=False)
                if topic in self._missing:
                    continue
            for partition, end in (await event_log.end_offsets(topic)).items():
                position = self._positions.get((topic, partition), 0)
                if end <= position:
                    continue
                if end - position > MAX_BEHIND:
                    log.warning(
                        "live tail skipped ahead",
                        topic=topic,
                        partition=partition,
                        skipped=end - MAX_BEHIND - position,
                    )
                    position = end - MAX_BEHIND
                batch = await event_log.read(topic, partition, offset=position, limit=READ_LIMIT)
                position = batch[-1].offset + 1 if batch else end
                self._positions[(topic, partition)] = position
                records.extend(batch)
                more = more or position < end
        if records:
            records.sort(key=lambda r: r.timestamp)
            events = [e for e in (self._event(r) for r in records) if e is not None]
            now = self._clock()
            for client in list(self._clients):
                client.deliver(events, now)
        return more

    def _event(self, record: Record) -> dict[str, Any] | None:
        """The summary of one record, or None when it cannot be decoded or its key and
        payload disagree about the project."""
        try:
            payload = decode(record)
        except ValueError:
            return None
        if not record.key.startswith(f"{payload.project}/"):
            return None
        event = summarize(record, payload)
        if event["kind"] == "notification":
            self._remembered[event["ref"]] = {
                name: event[name]
                for name in ("resource_type", "resource_id", "interaction", "subscription")
            }
            if len(self._remembered) > REMEMBERED:
                self._remembered.popitem(last=False)
        elif event.get("notification_id"):
            for name, value in self._remembered.get(event["notification_id"], {}).items():
                event.setdefault(name, value)
        return event


TAILER = web.AppKey("dashboard_tailer", Tailer)


def install(app: web.Application) -> None:
    """Give the dashboard application its tailer, stopped when the application shuts down
    (before the server waits for open streams to finish)."""
    tailer = Tailer(app[DASHBOARD].event_log)
    app[TAILER] = tailer

    async def stop(_: web.Application) -> None:
        await tailer.stop()

    app.on_shutdown.append(stop)
    app.on_cleanup.append(stop)


def _sse(data: Mapping[str, Any]) -> bytes:
    # JSON escapes line breaks, so one data line is the whole event.
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def _next(client: TailClient) -> dict[str, Any] | None:
    """The client's next event, ``{}`` after :data:`KEEPALIVE` seconds of silence, None at
    the end."""
    try:
        return await asyncio.wait_for(client.queue.get(), KEEPALIVE)
    except TimeoutError:
        return {}


def _linked(mount: str, event: dict[str, Any]) -> dict[str, Any]:
    """An event with links to its record in the event browser and to its trace."""
    if event["kind"] not in FILTER_KINDS:
        return event
    record = record_link(mount, event["topic"], event["partition"], event["offset"])
    return {**event, "links": {"record": record, "trace": trace_link(mount, event["ref"])}}


async def tail_stream(request: web.Request) -> web.StreamResponse:
    """``GET /api/tail?kinds=&type=&interaction=&id=&subscription=&bot=&outcome=``: events
    as Server-Sent Events, each a JSON object; the first is ``{"kind": "ready", ...}``."""
    tail_filter = TailFilter.parse(request.query)
    project = caller(request).project
    if request.method == "HEAD":  # the headers of the stream; a body would break the connection
        return web.Response(headers={"Content-Type": "text/event-stream"})
    tailer = request.app[TAILER]
    with log_errors():
        client = await tailer.subscribe(project, tail_filter)
    mount = mount_of(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
        }
    )
    try:
        await response.prepare(request)
        ready = {"kind": "ready", "project": project, "filter": tail_filter.as_json()}
        await response.write(b"retry: 3000\n" + _sse(ready))
        while (event := await _next(client)) is not None:
            await response.write(_sse(_linked(mount, event)) if event else b": keepalive\n\n")
    except ConnectionError:
        pass  # the client went away
    finally:
        tailer.unsubscribe(client)
    return response


async def tail_page(request: web.Request) -> web.Response:
    """The live tail page (its script reads ``/api/tail`` with the same filters)."""
    try:
        tail_filter = TailFilter.parse(request.query)
        error = None
    except BadRequest as exc:
        tail_filter, error = TailFilter(), str(exc)
    values = {
        "nav": "tail",
        "filter": tail_filter.as_json(),
        "kinds": FILTER_KINDS,
        "error": error,
    }
    return render("tail.html", request, values)


def routes() -> list[web.RouteDef]:
    """Routes of the live tail."""
    return [web.get("/tail", tail_page), web.get("/api/tail", tail_stream)]
