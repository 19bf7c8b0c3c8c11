"""Subscriptions: the project's table with delivery figures, one Subscription with its actions,
and the form that defines a new one.

Figures come from where they are kept, never from a scan of a whole topic: events matched from
the statistics windows (``notifications`` per subscription), event numbers, the last event,
failures in a row, dead letters and the lag of the oldest undelivered notification from the
delivery store (the same counters ``Subscription/$status`` answers with), recent attempts from
the subscription's own partition of ``fhir.deliveries.v1``.

Every action is a form posted to a dashboard route (CSRF token in the form or the htmx header):
it asks for confirmation first (a page re-posting the same fields with ``confirm=yes``; the
page's script asks in a dialog instead), then does what the FHIR operation of the same name
does, through the same code, and records an AuditEvent naming the key.

* ``POST .../{id}/status``: ``active`` or ``off``, an update on the version shown (If-Match).
* ``POST .../{id}/explain``: ``$explain`` for a pasted resource or one named by reference,
  this subscription's result only (no state changes, so no AuditEvent).
* ``POST .../{id}/redeliver``: events ``first``..``last`` sent again as they were, with their
  event numbers, one attempt each (unlike ``$resend``, which makes a new notification).
* ``POST .../{id}/resend``: ``$resend`` of a resource's current version (new event number).
* ``POST .../{id}/dead-letters/retry|discard``: selected dead letters (``id``, repeated) or
  ``all=yes``, like ``Subscription/$dead-letters/$retry`` and ``$discard``.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiohttp import web
from multidict import MultiDictProxy
from pydantic import ValidationError

from fhirbots.engine.dashboard.audit import Action, audit_action
from fhirbots.engine.dashboard.context import DashboardServices, caller, deps, render
from fhirbots.engine.delivery.errors import DeliveryError
from fhirbots.engine.delivery.policy import SECRET_URLS, policy_for
from fhirbots.engine.delivery.store import Delivery
from fhirbots.engine.delivery.subscriptions import BACKPORT_CONTENT_URL, topic_of
from fhirbots.engine.errors import BadRequest, FhirError, NotFound
from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.eventlog.port import EventLog
from fhirbots.engine.fhir.service import check_id
from fhirbots.engine.observatory.model import WINDOW
from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.engine.observatory.windows import window_start
from fhirbots.engine.operations.subscriptions import build_explain_event
from fhirbots.engine.stages.dispatcher import Dispatcher
from fhirbots.engine.stages.matcher import load_config
from fhirbots.engine.storage.model import CreateOp, StoredResource, WriteContext
from fhirbots.schemas.deliveries import DeliveryAttemptRecord
from fhirbots.schemas.topics import DELIVERIES
from fhirbots.subscriptions.definitions import FHIRPATH_CRITERIA_URL, INTERACTION_URL
from fhirbots.subscriptions.explain import explain

__all__ = [
    "MAX_REDELIVER",
    "NewSubscription",
    "build_subscription",
    "field_of",
    "routes",
]

_MOUNT = "/dashboard"

MATCHED_RANGES: dict[str, timedelta] = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
"""Spans over which events matched are counted in the table."""

MAX_REDELIVER = 100
"""Events one redelivery may name: each is an HTTP request made while the page waits."""

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

SECRET_URL = next(u for u in SECRET_URLS if u.startswith("https://fhirbots.dev/"))
"""The HMAC secret extension the form writes (the engine also reads Medplum's URLs)."""

CHANNEL_TYPES = ("rest-hook", "websocket", "message")
"""Channel types the form offers (``email`` is refused by the engine)."""

PAYLOAD_TYPES = ("", "application/fhir+json", "application/json")
"""``channel.payload`` choices; empty means none (R4: an empty notification)."""

CONTENT_LEVELS = ("", "empty", "id-only", "full-resource")
"""Backport IG payload content choices; empty means the engine's default."""

INTERACTIONS = ("create", "update", "delete")
DEFAULT_INTERACTIONS = ("create", "update")
"""What a criteria subscription fires on without the interactions extension."""

_log = structlog.get_logger(__name__)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


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
        "created": _iso(row.created_at),
        "updated": _iso(row.updated_at),
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
                "started": _iso(attempt.started),
                "duration_ms": round(attempt.duration_ms, 1),
                "traced": attempt.trace_id is not None,
            }
        )
        if len(found) >= RECENT_ATTEMPTS:
            break
    return found


async def _stored(
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
    stored = await _stored(services, project, subscription_id)
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


async def _detail_page(
    request: web.Request,
    subscription_id: str,
    *,
    explained: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
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
    return await _detail_page(request, request.match_info["id"])


# -- actions ---------------------------------------------------------------------------------


def _done(subscription_id: str, code: str, **numbers: int) -> web.HTTPSeeOther:
    query = "&".join([f"done={code}", *(f"{k}={v}" for k, v in numbers.items())])
    return web.HTTPSeeOther(f"{_MOUNT}/subscriptions/{subscription_id}?{query}")


def _confirmation(
    request: web.Request,
    form: MultiDictProxy[Any],
    subscription_id: str,
    question: str,
    *,
    danger: bool = False,
) -> web.Response:
    """The page that asks before an action: the same form again, with ``confirm=yes``."""
    fields = [(k, str(v)) for k, v in form.items() if k not in ("csrf", "confirm")]
    values = {
        "nav": "subscriptions",
        "subscription_id": subscription_id,
        "question": question,
        "action": request.path,
        "fields": fields,
        "danger": danger,
    }
    return render("subscription_confirm.html", request, values)


def _confirmed(form: MultiDictProxy[Any]) -> bool:
    return form.get("confirm") == "yes"


def _need_dispatcher(services: DashboardServices) -> Dispatcher:
    dispatcher = services.dispatcher()
    if dispatcher is None:
        raise BadRequest("this process keeps no delivery state; use a process that serves the API")
    return dispatcher


async def _audit(
    request: web.Request,
    subtype: str,
    description: str,
    subscription_id: str,
    *,
    action: Action = "E",
    success: bool = True,
) -> None:
    await audit_action(
        deps(request).fhir,
        caller(request),
        subtype,
        description,
        action=action,
        entity=f"Subscription/{subscription_id}",
        success=success,
    )


async def set_status(request: web.Request) -> web.StreamResponse:
    """``POST /subscriptions/{id}/status``: ``status`` (active, off) on ``version``."""
    subscription_id = request.match_info["id"]
    form = await request.post()
    wanted = str(form.get("status", ""))
    if wanted not in ("active", "off"):
        raise BadRequest("status must be active or off")
    version = str(form.get("version", ""))
    if not version.isdigit():
        raise BadRequest("name the version shown (If-Match)")
    services = deps(request)
    principal = caller(request)
    stored = await _stored(services, principal.project, subscription_id)
    if not _confirmed(form):
        verb = "Enable" if wanted == "active" else "Disable"
        return _confirmation(
            request,
            form,
            subscription_id,
            f"{verb} Subscription/{subscription_id} (set its status to {wanted})?",
            danger=wanted == "off",
        )
    resource = copy.deepcopy(stored.content or {})
    before = resource.get("status")
    resource["status"] = wanted
    resource.pop("meta", None)
    if wanted == "active":
        resource.pop("error", None)  # what went wrong before no longer describes it
    await services.fhir.update(
        principal.project,
        "Subscription",
        subscription_id,
        resource,
        WriteContext(author=principal.author),
        if_match=int(version),
    )
    dispatcher = services.dispatcher()
    if dispatcher is not None:
        dispatcher.registry.forget(principal.project, subscription_id)
    await _audit(
        request,
        "subscription-status",
        f"Subscription/{subscription_id} status {before} -> {wanted}",
        subscription_id,
        action="U",
    )
    raise _done(subscription_id, "enabled" if wanted == "active" else "disabled")


async def _explain_body(
    services: DashboardServices, project: str, form: MultiDictProxy[Any]
) -> dict[str, Any]:
    """The ``$explain`` Parameters for the form: a pasted resource or one named by reference."""
    interaction = str(form.get("interaction", "")) or None
    if interaction is not None and interaction not in INTERACTIONS:
        raise BadRequest(f"unknown interaction {interaction!r}")
    reference = str(form.get("reference", "")).strip()
    text = str(form.get("resource", "")).strip()
    previous: dict[str, Any] | None = None
    if reference:
        parts = reference.strip("/").split("/")
        if len(parts) == 2:
            stored = await services.fhir.read(project, parts[0], parts[1])
        elif len(parts) == 4 and parts[2] == "_history":
            stored = await services.fhir.vread(project, parts[0], parts[1], parts[3])
        else:
            raise BadRequest("a reference is Type/id or Type/id/_history/version")
        resource = stored.content or {}
        if interaction == "update" and stored.version_id > 1:
            with contextlib.suppress(FhirError):  # no earlier version: explained as is
                earlier = await services.fhir.vread(
                    project, stored.resource_type, stored.id, str(stored.version_id - 1)
                )
                previous = earlier.content
    elif text:
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise BadRequest(f"the pasted resource is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise BadRequest("paste one resource (a JSON object)")
        resource = parsed
    else:
        raise BadRequest("paste a resource or name one by reference")
    parameters: list[dict[str, Any]] = []
    if interaction == "delete":
        parameters.append({"name": "previous", "resource": resource})
    else:
        parameters.append({"name": "resource", "resource": resource})
        if previous is not None:
            parameters.append({"name": "previous", "resource": previous})
    if interaction is not None:
        parameters.append({"name": "interaction", "valueCode": interaction})
    return {"resourceType": "Parameters", "parameter": parameters}


async def explain_action(request: web.Request) -> web.Response:
    """``POST /subscriptions/{id}/explain``: would this subscription fire, and if not, why."""
    subscription_id = request.match_info["id"]
    form = await request.post()
    services = deps(request)
    project = caller(request).project
    await _stored(services, project, subscription_id)
    explained: dict[str, Any] = {
        "reference": str(form.get("reference", "")),
        "resource": str(form.get("resource", "")),
        "interaction": str(form.get("interaction", "")),
    }
    try:
        event = build_explain_event(project, await _explain_body(services, project, form))
        config = await load_config(services.fhir.storage, project, 0)
        results = [
            item.to_json()
            for item in explain(config, event)
            if item.subscription == f"Subscription/{subscription_id}"
        ]
        explained["result"] = results[0] if results else None
    except FhirError as exc:
        if exc.status >= 500:
            raise
        explained["error"] = exc.message
    return await _detail_page(request, subscription_id, explained=explained)


def _event_numbers(form: MultiDictProxy[Any]) -> tuple[int, int]:
    first_text = str(form.get("first", "")).strip()
    last_text = str(form.get("last", "")).strip() or first_text
    if not first_text.isdigit() or not last_text.isdigit():
        raise BadRequest("name the event numbers to deliver again (first, and last for a range)")
    first, last = int(first_text), int(last_text)
    if last < first:
        raise BadRequest(f"the range {first}..{last} is empty")
    if last - first + 1 > MAX_REDELIVER:
        raise BadRequest(f"at most {MAX_REDELIVER} events at once")
    return first, last


async def redeliver(request: web.Request) -> web.StreamResponse:
    """``POST /subscriptions/{id}/redeliver``: events ``first``..``last`` sent again with their
    event numbers (one attempt each; the store's state of each event is left as it is)."""
    subscription_id = request.match_info["id"]
    form = await request.post()
    first, last = _event_numbers(form)
    services = deps(request)
    project = caller(request).project
    await _stored(services, project, subscription_id)
    dispatcher = _need_dispatcher(services)
    if not _confirmed(form):
        which = f"event {first}" if first == last else f"events {first} to {last}"
        return _confirmation(
            request,
            form,
            subscription_id,
            f"Deliver {which} of Subscription/{subscription_id} again, as they were sent "
            "(same event numbers)?",
        )
    dispatcher.registry.forget(project, subscription_id)
    info = await dispatcher.registry.get(project, subscription_id)
    if info is None:
        raise NotFound(f"Subscription/{subscription_id} is not known")
    if info.status == "off":
        raise BadRequest(f"Subscription/{subscription_id} is off; enable it first")
    rows = await dispatcher.store.events(
        project, subscription_id, first=first, last=last, limit=MAX_REDELIVER
    )
    if not rows:
        raise NotFound(f"no retained event of Subscription/{subscription_id} in {first}..{last}")
    delivered: list[int] = []
    failures: list[str] = []
    for row in rows:
        try:
            result = await dispatcher.sender.send(row, info)
        except Exception as exc:  # a channel bug is a failed attempt, as in a delivery lane
            _log.exception("channel raised", notification=row.notification_id)
            failures.append(f"#{row.event_number}: {type(exc).__name__}: {exc}")
            continue
        if result.success:
            delivered.append(row.event_number)
        else:
            failures.append(f"#{row.event_number}: {result.error or 'failed'}")
    description = f"events {first}..{last} of Subscription/{subscription_id} delivered again: "
    description += f"{len(delivered)} delivered"
    if failures:
        description += "; failed " + "; ".join(failures)
    await _audit(request, "redeliver", description, subscription_id, success=not failures)
    raise _done(subscription_id, "redelivered", n=len(delivered), failed=len(failures))


async def resend(request: web.Request) -> web.StreamResponse:
    """``POST /subscriptions/{id}/resend``: ``$resend`` of ``resource`` (Type/id)."""
    subscription_id = request.match_info["id"]
    form = await request.post()
    reference = str(form.get("resource", "")).strip().strip("/")
    resource_type, _, resource_id = reference.partition("/")
    if not resource_type or not resource_id or "/" in resource_id:
        raise BadRequest("name the resource to send again as Type/id")
    services = deps(request)
    project = caller(request).project
    await _stored(services, project, subscription_id)
    dispatcher = _need_dispatcher(services)
    if not _confirmed(form):
        return _confirmation(
            request,
            form,
            subscription_id,
            f"Send the current version of {reference} to Subscription/{subscription_id} as a "
            "new notification (a new event number)?",
        )
    try:
        accepted = await dispatcher.resend(project, subscription_id, resource_type, resource_id)
    except DeliveryError as exc:
        raise NotFound(str(exc)) from exc
    await _audit(
        request,
        "resend",
        f"{reference} sent again to Subscription/{subscription_id} as event "
        f"{accepted.event_number}",
        subscription_id,
    )
    raise _done(subscription_id, "resent", event=accepted.event_number)


async def dead_letters_action(request: web.Request) -> web.StreamResponse:
    """``POST /subscriptions/{id}/dead-letters/{retry|discard}``: the selected dead letters
    (``id``, repeated) or ``all=yes``."""
    subscription_id = request.match_info["id"]
    action = request.match_info["action"]
    form = await request.post()
    ids = [str(i) for i in form.getall("id", []) if str(i)]
    everything = form.get("all") == "yes"
    if not ids and not everything:
        raise BadRequest("select dead letters, or all of them")
    services = deps(request)
    project = caller(request).project
    await _stored(services, project, subscription_id)
    dispatcher = _need_dispatcher(services)
    which = "every dead letter" if everything else f"{len(ids)} dead letter(s)"
    if not _confirmed(form):
        question = (
            f"Deliver {which} of Subscription/{subscription_id} again (same event numbers)?"
            if action == "retry"
            else f"Discard {which} of Subscription/{subscription_id} for good?"
        )
        return _confirmation(request, form, subscription_id, question, danger=action == "discard")
    chosen = None if everything else ids
    if action == "retry":
        count = await dispatcher.retry_dead_letters(project, chosen, subscription_id)
    else:
        count = await dispatcher.store.discard(project, chosen, subscription_id)
    named = "" if everything else f" ({', '.join(ids)})"
    verb = "queued again" if action == "retry" else "discarded"
    await _audit(
        request,
        f"dead-letters-{action}",
        f"{count} dead letter(s) of Subscription/{subscription_id} {verb}{named}",
        subscription_id,
        action="E" if action == "retry" else "D",
    )
    raise _done(subscription_id, "retried" if action == "retry" else "discarded", n=count)


# -- the form of a new Subscription ----------------------------------------------------------


NewSubscription = dict[str, Any]
"""The form's values by field name (strings, and a list for ``interactions``)."""

FIELDS = (
    "reason",
    "status",
    "criteria",
    "fhirpath",
    "interactions",
    "channel_type",
    "endpoint",
    "headers",
    "secret",
    "payload",
)
"""The form's fields, in page order; errors are placed beside them."""

_EXPRESSIONS: tuple[tuple[str, str], ...] = (
    ("Subscription.criteria", "criteria"),
    ("Subscription._criteria", "criteria"),
    ("Subscription.extension(fhir-path-criteria-expression)", "fhirpath"),
    ("Subscription.extension(subscription-supported-interaction)", "interactions"),
    ("Subscription.channel.type", "channel_type"),
    ("Subscription.channel.endpoint", "endpoint"),
    ("Subscription.channel.header", "headers"),
    ("Subscription.channel.payload", "payload"),
    ("Subscription.channel._payload", "payload"),
    ("Subscription.status", "status"),
    ("Subscription.reason", "reason"),
)
"""Element paths (as OperationOutcome issues name them) and the form field each belongs to."""


def _defaults() -> NewSubscription:
    return {
        "reason": "",
        "status": "active",
        "criteria": "",
        "fhirpath": "",
        "interactions": list(DEFAULT_INTERACTIONS),
        "channel_type": "rest-hook",
        "endpoint": "",
        "headers": "",
        "secret": "",
        "payload": "application/fhir+json",
        "content": "",
    }


def _form_values(form: MultiDictProxy[Any]) -> NewSubscription:
    values = _defaults()
    for name in values:
        if name == "interactions":
            values[name] = [str(v) for v in form.getall(name, [])]
        elif name in form:
            values[name] = str(form[name])
    return values


def build_subscription(
    values: NewSubscription,
) -> tuple[dict[str, Any], dict[int, str], dict[str, str]]:
    """The R4 Subscription the form describes.

    Args:
        values: The form's values (see :data:`FIELDS`, plus ``content``).

    Returns:
        The resource; the form field of each entry of its ``extension`` (validation names them
        by index); and errors found before asking the server, by field.
    """
    errors: dict[str, str] = {}
    criteria = str(values.get("criteria", "")).strip()
    if not criteria:
        errors["criteria"] = "a search string such as Patient?gender=female, or a topic URL"
    channel_type = str(values.get("channel_type", ""))
    endpoint = str(values.get("endpoint", "")).strip()
    channel: dict[str, Any] = {"type": channel_type}
    if endpoint:
        channel["endpoint"] = endpoint
    elif channel_type in ("rest-hook", "message"):
        errors["endpoint"] = (
            "a URL (or Bot/<id>)" if channel_type == "rest-hook" else "a topic name"
        )
    headers = [line.strip() for line in str(values.get("headers", "")).splitlines()]
    headers = [line for line in headers if line]
    bad = [line for line in headers if ":" not in line or not line.partition(":")[0].strip()]
    if bad:
        errors["headers"] = f"one 'Name: value' per line, not {bad[0]!r}"
    if headers:
        channel["header"] = headers
    if values.get("payload"):
        channel["payload"] = str(values["payload"])
    if values.get("content"):
        channel["_payload"] = {
            "extension": [{"url": BACKPORT_CONTENT_URL, "valueCode": str(values["content"])}]
        }
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": str(values.get("status") or "active"),
        "reason": str(values.get("reason", "")).strip() or "defined in the dashboard",
        "criteria": criteria,
        "channel": channel,
    }
    extensions: list[dict[str, Any]] = []
    fields: dict[int, str] = {}
    fhirpath = str(values.get("fhirpath", "")).strip()
    if fhirpath:
        fields[len(extensions)] = "fhirpath"
        extensions.append({"url": FHIRPATH_CRITERIA_URL, "valueString": fhirpath})
    secret = str(values.get("secret", ""))
    if secret:
        fields[len(extensions)] = "secret"
        extensions.append({"url": SECRET_URL, "valueString": secret})
    interactions = [str(i) for i in values.get("interactions") or ()]
    if not interactions:
        errors["interactions"] = "choose at least one"
    elif sorted(interactions) != sorted(DEFAULT_INTERACTIONS):
        for interaction in interactions:
            fields[len(extensions)] = "interactions"
            extensions.append({"url": INTERACTION_URL, "valueCode": interaction})
    if extensions:
        resource["extension"] = extensions
    return resource, fields, errors


def field_of(text: str, extension_fields: Mapping[int, str]) -> str | None:
    """The form field an issue's ``expression`` (or diagnostics) names, or None.

    Args:
        text: An element path such as ``Subscription.channel.endpoint``, or diagnostics that
            start with one.
        extension_fields: The field of each ``Subscription.extension[i]`` of the resource sent.
    """
    for path, name in _EXPRESSIONS:
        if text == path or text.startswith((f"{path}.", f"{path}[", f"{path}:", f"{path} ")):
            return name
    prefix = "Subscription.extension["
    if text.startswith(prefix):
        index = text[len(prefix) :].partition("]")[0]
        if index.isdigit():
            return extension_fields.get(int(index))
    return None


def _place(exc: FhirError, extension_fields: Mapping[int, str]) -> tuple[dict[str, str], list[str]]:
    """An OperationOutcome's issues, each beside its field, the rest for the top."""
    by_field: dict[str, list[str]] = {}
    rest: list[str] = []
    for issue in exc.issues:
        candidates = [*issue.expression, issue.diagnostics]
        name = next((f for f in (field_of(c, extension_fields) for c in candidates) if f), None)
        if name is None:
            rest.append(issue.diagnostics)
        else:
            by_field.setdefault(name, []).append(issue.diagnostics)
    return {k: "; ".join(v) for k, v in by_field.items()}, rest


def _form_page(
    request: web.Request,
    values: NewSubscription,
    *,
    errors: Mapping[str, str] | None = None,
    problems: list[str] | None = None,
    status: int = 200,
) -> web.Response:
    page = {
        "nav": "subscriptions",
        "values": values,
        "errors": errors or {},
        "problems": problems or [],
        "channel_types": CHANNEL_TYPES,
        "payload_types": PAYLOAD_TYPES,
        "content_levels": CONTENT_LEVELS,
        "interactions": INTERACTIONS,
    }
    return render("subscription_form.html", request, page, status=status)


async def new_form(request: web.Request) -> web.Response:
    """``GET /subscriptions/new``."""
    return _form_page(request, _defaults())


async def create(request: web.Request) -> web.StreamResponse:
    """``POST /subscriptions/new``: build the Subscription and create it through the FHIR
    service (its write checks refuse what the engine cannot evaluate)."""
    values = _form_values(await request.post())
    resource, extension_fields, errors = build_subscription(values)
    principal = caller(request)
    services = deps(request)
    try:
        if errors:
            # Still ask the write checks (nothing is written), so every error shows at once.
            await services.fhir.prepare(principal.project, CreateOp(resource))
            return _form_page(request, values, errors=errors, status=422)
        result = await services.fhir.create(
            principal.project, resource, WriteContext(author=principal.author)
        )
    except FhirError as exc:
        if exc.status >= 500:
            raise
        placed, rest = _place(exc, extension_fields)
        placed.update(errors)  # the form's own word on a field comes first
        status = 422 if errors else exc.status
        return _form_page(request, values, errors=placed, problems=rest, status=status)
    stored = result.stored
    assert stored is not None  # a create always stores a version
    await _audit(
        request,
        "subscription-create",
        f"Subscription/{stored.id} created: {resource['criteria']}",
        stored.id,
        action="C",
    )
    raise _done(stored.id, "created")


def routes() -> list[web.RouteDef]:
    """Routes of the subscriptions views (``new`` before ``{id}``: it is a page, not an id)."""
    base = "/subscriptions"
    one = f"{base}/{{id}}"
    return [
        web.get(base, list_page),
        web.get("/api/subscriptions", list_json),
        web.get(f"{base}/new", new_form),
        web.post(f"{base}/new", create),
        web.get(one, detail_page),
        web.get("/api/subscriptions/{id}", detail_json),
        web.post(f"{one}/status", set_status),
        web.post(f"{one}/explain", explain_action),
        web.post(f"{one}/redeliver", redeliver),
        web.post(f"{one}/resend", resend),
        web.post(f"{one}/dead-letters/{{action:retry|discard}}", dead_letters_action),
    ]
