"""The actions on one Subscription of the dashboard: status, ``$explain``, redelivery,
``$resend`` and its dead letters.

Every action is a form posted to a dashboard route (CSRF token in the form or the htmx header):
it asks for confirmation first (a page re-posting the same fields with ``confirm=yes``; the
page's script asks in a dialog instead), then does what the FHIR operation of the same name
does, through the same code, records an AuditEvent naming the key, and goes back to the
Subscription's page saying what it did.

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
from typing import Any

import structlog
from aiohttp import web
from multidict import MultiDictProxy

from fhirbots.engine.dashboard.audit import Action, audit_action
from fhirbots.engine.dashboard.context import DashboardServices, caller, deps, render
from fhirbots.engine.dashboard.subscription_form import INTERACTIONS
from fhirbots.engine.dashboard.subscriptions import detail_view, done, subscription_of
from fhirbots.engine.delivery.errors import DeliveryError
from fhirbots.engine.errors import BadRequest, FhirError, NotFound
from fhirbots.engine.operations.subscriptions import build_explain_event
from fhirbots.engine.stages.dispatcher import Dispatcher
from fhirbots.engine.stages.matcher import load_config
from fhirbots.engine.storage.model import WriteContext
from fhirbots.subscriptions.explain import explain

__all__ = ["MAX_REDELIVER", "routes"]

MAX_REDELIVER = 100
"""Events one redelivery may name: each is an HTTP request made while the page waits."""

_log = structlog.get_logger(__name__)


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


async def _delivering(request: web.Request, subscription_id: str) -> tuple[str, Dispatcher]:
    """The caller's project and the dispatcher, for an action on the deliveries of
    ``subscription_id`` (404 unless it is the project's; 400 in a process without them)."""
    services = deps(request)
    project = caller(request).project
    await subscription_of(services, project, subscription_id)
    dispatcher = services.dispatcher()
    if dispatcher is None:
        raise BadRequest("this process keeps no delivery state; use a process that serves the API")
    return project, dispatcher


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
    stored = await subscription_of(services, principal.project, subscription_id)
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
    raise done(subscription_id, "enabled" if wanted == "active" else "disabled")


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
    await subscription_of(services, project, subscription_id)
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
    return await detail_view(request, subscription_id, explained=explained)


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
    project, dispatcher = await _delivering(request, subscription_id)
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
    raise done(subscription_id, "redelivered", n=len(delivered), failed=len(failures))


async def resend(request: web.Request) -> web.StreamResponse:
    """``POST /subscriptions/{id}/resend``: ``$resend`` of ``resource`` (Type/id)."""
    subscription_id = request.match_info["id"]
    form = await request.post()
    reference = str(form.get("resource", "")).strip().strip("/")
    resource_type, _, resource_id = reference.partition("/")
    if not resource_type or not resource_id or "/" in resource_id:
        raise BadRequest("name the resource to send again as Type/id")
    project, dispatcher = await _delivering(request, subscription_id)
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
    raise done(subscription_id, "resent", event=accepted.event_number)


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
    project, dispatcher = await _delivering(request, subscription_id)
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
    raise done(subscription_id, "retried" if action == "retry" else "discarded", n=count)


def routes() -> list[web.RouteDef]:
    """Routes of the actions."""
    one = "/subscriptions/{id}"
    return [
        web.post(f"{one}/status", set_status),
        web.post(f"{one}/explain", explain_action),
        web.post(f"{one}/redeliver", redeliver),
        web.post(f"{one}/resend", resend),
        web.post(f"{one}/dead-letters/{{action:retry|discard}}", dead_letters_action),
    ]
