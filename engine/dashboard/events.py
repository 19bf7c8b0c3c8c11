"""The event browser: the records of the engine's topics, searched and opened one by one.

It reads ``fhir.changes.v1``, ``fhir.notifications.v1``, ``fhir.deliveries.v1``,
``bots.executions.v1`` and their dead-letter twins (what a request reads, filters and where it
goes on is :mod:`fhirbots.engine.dashboard.event_scan`'s). This module answers the browser's
requests: a page of records as rows, one record whole, each with links to the record and its
trace. Its summary of a record (:func:`summarize`) is also the live tail's and the trace
view's, and its access to the event log (:func:`event_log`, :func:`log_errors`) the live
tail's too.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from fhirbots.engine.dashboard.context import caller, deps, render
from fhirbots.engine.dashboard.event_scan import (
    BROWSABLE,
    KINDS,
    SCAN_LIMIT,
    EventQuery,
    EventsPage,
    browse,
    json_of,
    one_record,
)
from fhirbots.engine.dashboard.times import instant
from fhirbots.engine.errors import BadRequest, FhirError, NotFound
from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.eventlog.port import (
    HEADER_ERROR,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    EventLog,
    Record,
)
from fhirbots.engine.observability.tracing import trace_id_in
from fhirbots.engine.stages.stats import Payload, decode
from fhirbots.schemas.deliveries import DeliveryAttemptRecord
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.notifications import Notification

__all__ = [
    "EventLogUnavailable",
    "event_log",
    "full",
    "item",
    "log_errors",
    "mount_of",
    "record_link",
    "routes",
    "summarize",
    "trace_link",
]


def mount_of(request: web.Request) -> str:
    """Where the dashboard is mounted (the templates' ``mount``), for links in JSON."""
    return str(aiohttp_jinja2.get_env(request.app).globals["mount"])


def record_link(mount: str, topic: str, partition: int, offset: int) -> str:
    """Path of one record in the event browser."""
    return f"{mount}/events/{topic}/{partition}/{offset}"


def trace_link(mount: str, ref: str) -> str:
    """Path of the trace view of the step ``ref``."""
    return f"{mount}/trace/{ref}"


class EventLogUnavailable(FhirError):
    """The process has no event log open, or the log failed to answer (503: try again)."""

    status = 503
    code = "transient"


def event_log(request: web.Request) -> EventLog:
    """The process's event log.

    Raises:
        EventLogUnavailable: This process has none open (yet).
    """
    log = deps(request).event_log()
    if log is None:
        raise EventLogUnavailable("this process has no event log open; try again in a moment")
    return log


@contextlib.contextmanager
def log_errors() -> Iterator[None]:
    """Translate the event log's errors (a broker that does not answer) into a 503."""
    try:
        yield
    except EventLogError as exc:
        raise EventLogUnavailable(f"the event log did not answer: {exc}") from exc


def _decode(record: Record) -> Payload | None:
    """The typed payload of a record of the four followed topics, or None."""
    if record.topic not in KINDS:
        return None
    try:
        return decode(record)
    except ValueError:  # pydantic's ValidationError is one
        return None


def _bot_of(endpoint: str | None) -> str | None:
    return endpoint if endpoint and endpoint.startswith("Bot/") else None


def summarize(record: Record, payload: Payload) -> dict[str, Any]:
    """A few fields of a record, the same for the live tail, the browser and the trace view.

    Every summary has ``kind``, ``time``, ``ref`` (the step's id, which the trace view takes),
    ``trace_id`` and the record's position; the rest depends on the kind.
    """
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "project": payload.project,
    }
    if isinstance(payload, ChangeEvent):
        out.update(
            kind="change",
            time=instant(payload.time),
            ref=payload.event_id,
            trace_id=trace_id_in(payload.traceparent),
            resource_type=payload.resource_type,
            resource_id=payload.resource_id,
            interaction=payload.interaction,
            version=payload.version_id,
            author=payload.author,
            bot=payload.causation[-1].bot if payload.causation else None,
            execution=payload.causation[-1].execution if payload.causation else None,
        )
    elif isinstance(payload, Notification):
        out.update(
            kind="notification",
            time=instant(record.timestamp),
            ref=payload.notification_id,
            trace_id=trace_id_in(payload.traceparent),
            subscription=payload.subscription_id,
            event_id=payload.event_id,
            resource_type=payload.resource_type,
            resource_id=payload.resource_id,
            interaction=payload.interaction,
            channel=payload.channel.type,
            endpoint=payload.channel.endpoint,
            bot=_bot_of(payload.channel.endpoint),
        )
    elif isinstance(payload, DeliveryAttemptRecord):
        out.update(
            kind="delivery",
            time=instant(payload.started),
            ref=payload.attempt_id,
            trace_id=payload.trace_id,
            subscription=payload.subscription_id,
            notification_id=payload.notification_id,
            event_id=payload.event_id,
            event_number=payload.event_number,
            channel=payload.channel,
            endpoint=payload.endpoint,
            bot=_bot_of(payload.endpoint),
            attempt=payload.attempt,
            outcome=payload.outcome,
            status=payload.status,
            duration_ms=payload.duration_ms,
            error=payload.error,
        )
    else:
        out.update(
            kind="execution",
            time=instant(payload.started),
            ref=payload.execution_id,
            trace_id=trace_id_in(payload.trace_id),
            bot=payload.bot,
            outcome=payload.status,
            trigger=payload.trigger,
            duration_ms=payload.duration_ms,
            error=payload.error,
            notification_id=payload.notification_id,
        )
    return out


def _links(mount: str, summary: dict[str, Any]) -> dict[str, str]:
    links = {
        "record": record_link(mount, summary["topic"], summary["partition"], summary["offset"])
    }
    if summary.get("ref") and summary.get("trace_id"):
        links["trace"] = trace_link(mount, summary["ref"])
    return links


# -- views -----------------------------------------------------------------------------------


def _headers(record: Record) -> list[dict[str, str]]:
    out = []
    for name, value in record.headers:
        try:
            out.append({"name": name, "value": value.decode("utf-8")})
        except UnicodeDecodeError:
            out.append({"name": name, "base64": base64.b64encode(value).decode()})
    return out


def _source(mount: str, record: Record) -> dict[str, Any] | None:
    """Where a dead-letter record came from (from its headers), with a link."""
    topic = record.header(HEADER_SOURCE_TOPIC)
    partition = record.header(HEADER_SOURCE_PARTITION)
    offset = record.header(HEADER_SOURCE_OFFSET)
    if topic is None or partition is None or offset is None:
        return None
    try:
        p, o = int(partition), int(offset)
    except ValueError:
        return None
    name = topic.decode("utf-8", "replace")
    return {
        "topic": name,
        "partition": p,
        "offset": o,
        "link": record_link(mount, name, p, o) if name in BROWSABLE else None,
    }


def item(mount: str, record: Record) -> dict[str, Any]:
    """A record as a row of the browser (the JSON API and the page alike)."""
    payload = _decode(record)
    if payload is not None:
        out = summarize(record, payload)
    else:
        out = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        raw = json_of(record.value)
        if isinstance(raw, dict):
            out["project"] = raw.get("project")
    out["key"] = record.key
    out["timestamp"] = instant(record.timestamp)
    out["links"] = _links(mount, out)
    error = record.header(HEADER_ERROR)
    if error is not None:
        out["error"] = error.decode("utf-8", "replace")
        out["source"] = _source(mount, record)
    return out


def full(mount: str, record: Record) -> dict[str, Any]:
    """A record whole: its position, key, time, headers and payload (parsed when JSON)."""
    out = item(mount, record)
    value = json_of(record.value)
    out["headers"] = _headers(record)
    if value is not None:
        out["value"] = value
    else:
        out["value_text"] = record.value.decode("utf-8", "replace")
    return out


def _page_json(mount: str, query: EventQuery, page: EventsPage) -> dict[str, Any]:
    return {
        "topic": query.topic,
        "order": page.order,
        "limit": query.limit,
        "scanned": page.scanned,
        "scan_limit": SCAN_LIMIT,
        "scan_stopped": page.exhausted_scan,
        "next_cursor": page.cursor.encode() if page.cursor is not None else None,
        "items": [item(mount, r) for r in page.records],
    }


async def events_json(request: web.Request) -> web.Response:
    """``GET /api/events?topic=&partition=&offset=&since=&key=&header=&field=&limit=&cursor=``."""
    query = EventQuery.parse(request.query)
    with log_errors():
        page = await browse(event_log(request), caller(request).project, query)
    return web.json_response(_page_json(mount_of(request), query, page))


def _position(request: web.Request) -> tuple[str, int, int]:
    try:
        partition = int(request.match_info["partition"])
        offset = int(request.match_info["offset"])
    except ValueError as exc:
        raise NotFound("no such record: partition and offset are whole numbers") from exc
    return request.match_info["topic"], partition, offset


async def event_json(request: web.Request) -> web.Response:
    """``GET /api/events/{topic}/{partition}/{offset}``: one record whole."""
    topic, partition, offset = _position(request)
    with log_errors():
        record = await one_record(
            event_log(request), caller(request).project, topic, partition, offset
        )
    return web.json_response(full(mount_of(request), record))


async def events_page(request: web.Request) -> web.Response:
    """The browser page: the search form and one page of records."""
    values: dict[str, Any] = {
        "nav": "events",
        "topics": BROWSABLE,
        "q": {k: request.query.get(k, "") for k in _PARAMETERS},
    }
    try:
        query = EventQuery.parse(request.query)
        with log_errors():
            page = await browse(event_log(request), caller(request).project, query)
        values["page"] = _page_json(mount_of(request), query, page)
        next_query = {k: v for k, v in request.query.items() if k in _PARAMETERS and v}
        if page.cursor is not None:
            next_query["cursor"] = page.cursor.encode()
            values["next_query"] = next_query
    except BadRequest as exc:
        values["error"] = str(exc)
    return render("events.html", request, values)


_PARAMETERS = ("topic", "partition", "offset", "since", "key", "header", "field", "limit")


async def event_page(request: web.Request) -> web.Response:
    """One record whole, with links to its trace (and its source, for a dead letter)."""
    topic, partition, offset = _position(request)
    with log_errors():
        record = await one_record(
            event_log(request), caller(request).project, topic, partition, offset
        )
    shown = full(mount_of(request), record)
    values = {
        "nav": "events",
        "event": shown,
        "pretty": json.dumps(shown.get("value"), indent=2, sort_keys=False, ensure_ascii=False)
        if "value" in shown
        else shown.get("value_text", ""),
    }
    return render("event.html", request, values)


def routes() -> list[web.RouteDef]:
    """Routes of the event browser."""
    return [
        web.get("/events", events_page),
        web.get("/events/{topic}/{partition}/{offset}", event_page),
        web.get("/api/events", events_json),
        web.get("/api/events/{topic}/{partition}/{offset}", event_json),
    ]
