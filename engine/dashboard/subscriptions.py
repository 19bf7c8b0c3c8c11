"""Subscriptions: the project's table with delivery figures, and one Subscription's page.

Figures come from where they are kept, never from a scan of a whole topic: events matched from
the statistics windows (``notifications`` per subscription), event numbers, the last event,
failures in a row, dead letters and the lag of the oldest undelivered notification from the
delivery store (the same counters ``Subscription/$status`` answers with), recent attempts from
the subscription's own partition of ``fhir.deliveries.v1``.

Another project's Subscription is not found here (:func:`subscription_of`), nor by the
actions of :mod:`~fhirbots.engine.dashboard.subscription_actions` and the form of
:mod:`~fhirbots.engine.dashboard.subscription_form`, which come back to the page with a notice
of what they did (:func:`done`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from fhirbots.engine.dashboard.context import DashboardServices, caller, deps, render
from fhirbots.engine.dashboard.times import instant
from fhirbots.engine.delivery.policy import SECRET_URLS, policy_for
from fhirbots.engine.delivery.store import Delivery
from fhirbots.engine.delivery.subscriptions import topic_of
from fhirbots.engine.errors import NotFound
from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.eventlog.port import EventLog
from fhirbots.engine.fhir.service import check_id
from fhirbots.engine.observatory.model import WINDOW
from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.engine.observatory.windows import window_start
from fhirbots.engine.stages.dispatcher import Dispatcher
from fhirbots.engine.storage.model import StoredResource
from fhirbots.schemas.deliveries import DeliveryAttemptRecord
from fhirbots.schemas.topics import DELIVERIES

__all__ = ["detail_view", "done", "routes", "subscription_of"]

_MOUNT = "/dashboard"

MATCHED_RANGES: dict[str, timedelta] = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
"""Spans over which events matched are counted in the table."""

DEAD_LETTER_LIMIT = 500
"""Dead letters listed (and counted) per subscription; beyond, the count shows ``500+`` and the
CLI or ``$dead-letters`` with ``_count`` lists the rest."""

RECENT_EVENTS = 20
"""Most recent events shown on a subscription's page."""

RECENT_ATTEMPTS = 20
"""Most recent delivery attempts shown on a subscription's page."""

ATTEMPT_SCAN = 1000
"""Records read back from the end of the subscription's partition of ``fhir.deliveries.v1``
to find its recent attempts: the partition is shared with other subscriptions, so a busy
neighbour can push older attempts out of view, never make the page slow."""

MASK = "••••••"
"""Shown instead of a secret or a header value: the page is not where credentials are read."""

_log = structlog.get_logger(__name__)


# -- reading ---------------------------------------------------------------------------------


async def _matched(
    store: ObservatoryStore, project: str, now: datetime
) -> dict[str, dict[str, int]]:
    """Notifications per subscription over each of :data:`MATCHED_RANGES`."""
    until = window_start(now, WINDOW) + WINDOW
    out: dict[str, dict[str, int]] = {}
    for name, span in MATCHED_RANGES.items():
        totals = await store.series(project, "notifications", until - span, until, span)
        counts: dict[str, int] = {}
        for point in totals:
            if point.dims:
                counts[point.dims[0]] = counts.get(point.dims[0], 0) + point.count
        out[name] = counts
    return out


def _event(row: Delivery) -> dict[str, Any]:
    n = row.notification
    return {
        "id": row.notification_id,
        "event_number": row.event_number,
        "state": row.state,
        "attempts": row.attempts,
        "error": row.last_error,
        "focus": f"{n.resource_type}/{n.resource_id}/_history/{n.version_id}",
        "interaction": n.interaction,
        "created": instant(row.created_at),
        "updated": instant(row.updated_at),
    }


async def _delivery(
    dispatcher: Dispatcher, project: str, subscription_id: str, now: datetime
) -> dict[str, Any]:
    """What the delivery store knows of one subscription."""
    store = dispatcher.store
    counters = await store.counters(project, subscription_id)
    last = await store.last_event(project, subscription_id)
    oldest = await store.pending(project, subscription_id, limit=1)
    dead = await store.dead_letters(project, subscription_id, limit=DEAD_LETTER_LIMIT)
    return {
        "events_since_start": counters.events_since_start,
        "consecutive_failures": counters.dead_streak,
        "retrying_attempts": oldest[0].attempts if oldest else 0,
        "last_event": _event(last) if last is not None else None,
        "dead_letters": len(dead),
        "dead_letters_capped": len(dead) >= DEAD_LETTER_LIMIT,
        "lag_seconds": (
            round(max(0.0, (now - oldest[0].created_at).total_seconds()), 3) if oldest else 0.0
        ),
    }


def _row(
    stored: StoredResource,
    matched: Mapping[str, Mapping[str, int]],
    delivery: dict[str, Any] | None,
) -> dict[str, Any]:
    content = stored.content or {}
    channel = content.get("channel") or {}
    return {
        "id": stored.id,
        "version": stored.version_id,
        "status": content.get("status"),
        "reason": content.get("reason"),
        "criteria": content.get("criteria"),
        "topic": topic_of(content),
        "error": content.get("error"),
        "channel": {"type": channel.get("type"), "endpoint": channel.get("endpoint")},
        "matched": {name: counts.get(stored.id, 0) for name, counts in matched.items()},
        "delivery": delivery,
    }


async def table(request: web.Request) -> dict[str, Any]:
    """The caller's project's Subscriptions with their figures, as plain data."""
    project = caller(request).project
    services = deps(request)
    now = datetime.now(UTC)
    matched = await _matched(services.observatory, project, now)
    dispatcher = services.dispatcher()
    rows = []
    for stored in await services.fhir.storage.current_resources(project, "Subscription"):
        if stored.content is None:
            continue
        delivery = None
        if dispatcher is not None:
            delivery = await _delivery(dispatcher, project, stored.id, now)
        rows.append(_row(stored, matched, delivery))
    return {"project": project, "delivery_known": dispatcher is not None, "subscriptions": rows}


def _masked(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a Subscription with its HMAC secret and header values hidden."""
    out = copy.deepcopy(dict(resource))
    channel = out.get("channel") or {}
    for holder in (out, channel):
        for extension in holder.get("extension") or ():
            if isinstance(extension, dict) and extension.get("url") in SECRET_URLS:
                for key in [k for k in extension if k.startswith("value")]:
                    extension[key] = MASK
    if isinstance(channel.get("header"), list):
        channel["header"] = [
            f"{str(h).partition(':')[0]}: {MASK}" if ":" in str(h) else MASK
            for h in channel["header"]
        ]
    return out


async def _attempts(
    event_log: EventLog | None, project: str, subscription_id: str
) -> list[dict[str, Any]]:
    """The subscription's most recent delivery attempts, newest first."""
    if event_log is None:
        return []
    key = f"{project}/{subscription_id}"
    try:
        partition = partition_for(key, await event_log.partitions(DELIVERIES))
        end = (await event_log.end_offsets(DELIVERIES)).get(partition, 0)
        records = await event_log.read(
            DELIVERIES, partition, offset=max(0, end - ATTEMPT_SCAN), limit=ATTEMPT_SCAN
        )
    except EventLogError as exc:
        _log.info("delivery attempts not read", error=str(exc))
        return []
    found: list[dict[str, Any]] = []
    for record in reversed(records):
        if record.key != key:
            continue
        try:
            attempt = DeliveryAttemptRecord.model_validate_json(record.value)
        except ValidationError:
            continue  # a malformed record is the stats stage's to report, not this page's
        found.append(
            {
                "ref": attempt.attempt_id,
                "event_number": attempt.event_number,
                "attempt": attempt.attempt,
                "outcome": attempt.outcome,
                "status": attempt.status,
                "error": attempt.error,
                "response": attempt.response_excerpt,
                "started": instant(attempt.started),
                "duration_ms": round(attempt.duration_ms, 1),
                "traced": attempt.trace_id is not None,
            }
        )
        if len(found) >= RECENT_ATTEMPTS:
            break
    return found


async def subscription_of(
    services: DashboardServices, project: str, subscription_id: str
) -> StoredResource:
    """The Subscription of the caller's project (404 for any other project's)."""
    check_id(subscription_id)
    stored = await services.fhir.read(project, "Subscription", subscription_id)
    if stored.content is None:
        raise NotFound(f"Subscription/{subscription_id} is not known")
    return stored


async def detail(request: web.Request, subscription_id: str) -> dict[str, Any]:
    """Everything about one Subscription of the caller's project, as plain data."""
    project = caller(request).project
    services = deps(request)
    stored = await subscription_of(services, project, subscription_id)
    content = stored.content or {}
    now = datetime.now(UTC)
    matched = await _matched(services.observatory, project, now)
    dispatcher = services.dispatcher()
    delivery = None
    policy: dict[str, Any] | None = None
    dead: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    if dispatcher is not None:
        delivery = await _delivery(dispatcher, project, subscription_id, now)
        chosen = policy_for(content, dispatcher.defaults)
        policy = {
            "max_attempts": chosen.max_attempts,
            "timeout": chosen.timeout,
            "secret": chosen.secret is not None,
            "headers": len(chosen.headers),
            "audit": chosen.audit,
        }
        rows = await dispatcher.store.dead_letters(
            project, subscription_id, limit=DEAD_LETTER_LIMIT
        )
        dead = [_event(r) for r in rows]
        last = delivery["events_since_start"]
        recent = await dispatcher.store.events(
            project,
            subscription_id,
            first=max(1, last - RECENT_EVENTS + 1),
            last=last,
            limit=RECENT_EVENTS,
        )
        events = [_event(r) for r in reversed(recent)]
    return {
        "project": project,
        "subscription": _row(stored, matched, delivery),
        "resource": _masked(content),
        "policy": policy,
        "dead_letters": dead,
        "events": events,
        "attempts": await _attempts(services.event_log(), project, subscription_id),
        "delivery_known": dispatcher is not None,
    }


# -- pages -----------------------------------------------------------------------------------


async def list_page(request: web.Request) -> web.Response:
    """``GET /subscriptions``: the table (it refreshes itself every few seconds)."""
    values = {"nav": "subscriptions", **(await table(request))}
    return render("subscriptions.html", request, values)


async def list_json(request: web.Request) -> web.Response:
    """``GET /api/subscriptions``."""
    return web.json_response(await table(request))


async def detail_json(request: web.Request) -> web.Response:
    """``GET /api/subscriptions/{id}``."""
    return web.json_response(await detail(request, request.match_info["id"]))


def _notice(query: Mapping[str, str]) -> str | None:
    """The message of an action just done (the redirect after it names it by a code)."""

    def number(name: str) -> int:
        text = query.get(name, "0")
        return int(text) if text.isdigit() else 0

    done = query.get("done")
    n, failed = number("n"), number("failed")
    messages = {
        "created": "Subscription created.",
        "enabled": "Subscription enabled (status active).",
        "disabled": "Subscription disabled (status off).",
        "retried": f"{n} dead letter(s) queued for delivery again.",
        "discarded": f"{n} dead letter(s) discarded.",
        "redelivered": f"{n} event(s) delivered again"
        + (f", {failed} failed (see the AuditEvent)." if failed else "."),
        "resent": f"Resource sent again as event {number('event')}.",
    }
    return messages.get(done or "")


async def detail_view(
    request: web.Request,
    subscription_id: str,
    *,
    explained: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    """One Subscription's page, with the notice of the action just done and, after
    ``$explain``, its verdict (``explained``)."""
    values = {
        "nav": "subscriptions",
        "notice": _notice(request.query),
        "explained": explained,
        "resource_json": "",
        **(await detail(request, subscription_id)),
    }
    values["resource_json"] = json.dumps(values["resource"], indent=2, ensure_ascii=False)
    return render("subscription.html", request, values, status=status)


async def detail_page(request: web.Request) -> web.Response:
    """``GET /subscriptions/{id}``."""
    return await detail_view(request, request.match_info["id"])


def done(subscription_id: str, code: str, **numbers: int) -> web.HTTPSeeOther:
    """The redirect after an action: the Subscription's page, with the notice ``code`` names
    and its numbers (raise it)."""
    query = "&".join([f"done={code}", *(f"{k}={v}" for k, v in numbers.items())])
    return web.HTTPSeeOther(f"{_MOUNT}/subscriptions/{subscription_id}?{query}")


def routes() -> list[web.RouteDef]:
    """Routes of the table and of one Subscription's page."""
    return [
        web.get("/subscriptions", list_page),
        web.get("/api/subscriptions", list_json),
        web.get("/subscriptions/{id}", detail_page),
        web.get("/api/subscriptions/{id}", detail_json),
    ]
