"""Delivery operations: ``$status``, ``$events``, ``$get-ws-binding-token``, the websocket,
``$resend`` and dead letters.

* ``GET /fhir/R4/Subscription/<id>/$status`` and ``GET /fhir/R4/Subscription/$status?id=a,b``
  (every Subscription of the project without ``id``): a ``searchset`` Bundle of
  SubscriptionStatus (type ``query-status``).
* ``GET|POST /fhir/R4/Subscription/<id>/$events?eventsSinceNumber=&eventsUntilNumber=&content=``:
  past notifications from the retained log, as a notification Bundle (``query-event``).
* ``GET|POST /fhir/R4/Subscription/<id>/$get-ws-binding-token``: a Parameters with ``token``,
  ``expiration``, ``subscription`` and ``websocket-url`` (which carries the token).
* ``GET /fhir/R4/Subscription/$websocket?token=<token>`` (or with an API key): the websocket;
  send ``bind-with-token <token>``. Tokens are single-use and only bind on a socket opened by
  the key that asked for them; an upgrade with neither a valid token nor a key gets 401.
* ``POST /fhir/R4/Subscription/<id>/$resend?resource=Patient/1``: the resource's current
  version sent again as a new notification (new event number).
* ``GET /fhir/R4/Subscription/$dead-letters?subscription=&_count=``: a Parameters with one
  ``deadLetter`` per dead notification; ``POST .../$dead-letters/$retry`` and
  ``POST .../$dead-letters/$discard`` with ``id`` (repeatable) and/or ``subscription``, or
  neither for all of the project's dead letters.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from fhirbots.engine.delivery.errors import DeliveryError
from fhirbots.engine.delivery.payload import notification_bundle, status_bundle, subscription_status
from fhirbots.engine.delivery.store import Delivery
from fhirbots.engine.delivery.subscriptions import SubscriptionInfo, topic_of
from fhirbots.engine.delivery.websocket import Binding
from fhirbots.engine.errors import BadRequest, NotFound, Unauthorized
from fhirbots.engine.fhir.service import check_id
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.stages.dispatcher import Dispatcher
from fhirbots.engine.web.auth import Authenticator
from fhirbots.engine.web.context import principal
from fhirbots.engine.web.http import base_url, fhir_response, read_json

__all__ = ["WEBSOCKET_PATH", "delivery_routes"]

PREFIX = f"{API_PATH}/Subscription"
WEBSOCKET_PATH = f"{PREFIX}/$websocket"
"""Where websocket clients connect."""

MAX_EVENTS = 1000
"""Most notifications one ``$events`` call returns (the client pages by event number)."""

WS_HEARTBEAT_SECONDS = 30.0
"""Ping interval of bound websockets (keeps proxies from closing idle sockets)."""

_log = structlog.get_logger("fhirbots.engine.delivery")


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def _params(request: web.Request) -> dict[str, str]:
    """Operation parameters: the query string, and for a POST with a body its Parameters."""
    params = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        body = await read_json(request)
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise BadRequest("the body of this operation must be a Parameters resource")
        for parameter in body.get("parameter") or ():
            for key, value in parameter.items():
                if key.startswith("value"):
                    params[str(parameter.get("name"))] = str(value)
    return params


def _int_param(params: dict[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, not {text!r}")
    return int(text)


class _Handlers:
    def __init__(self, dispatcher: Dispatcher, authenticator: Authenticator | None) -> None:
        self.d = dispatcher
        self.authenticator = authenticator

    async def _subscription(self, project: str, subscription_id: str) -> SubscriptionInfo:
        check_id(subscription_id)
        self.d.registry.forget(project, subscription_id)
        info = await self.d.registry.get(project, subscription_id)
        if info is None:
            raise NotFound(f"Subscription/{subscription_id} is not known")
        return info

    async def _status(self, project: str, info: SubscriptionInfo) -> dict[str, Any]:
        subscription_id = str(info.resource["id"])
        counters = await self.d.store.counters(project, subscription_id)
        return subscription_status(
            project_subscription=(project, subscription_id),
            status=info.status,
            status_type="query-status",
            events_since_start=counters.events_since_start,
            topic=topic_of(info.resource),
            error=info.resource.get("error"),
        )

    async def status(self, request: web.Request) -> web.Response:
        project = principal(request).project
        if "id" in request.match_info:
            ids = [request.match_info["id"]]
        else:
            ids = [i for v in request.query.getall("id", []) for i in v.split(",") if i]
            if not ids:  # every Subscription of the project
                rows = await self.d.registry.storage.current_resources(project, "Subscription")
                ids = [r.id for r in rows]
        entries = []
        for subscription_id in ids:
            info = await self._subscription(project, subscription_id)
            entries.append(
                {"resource": await self._status(project, info), "search": {"mode": "match"}}
            )
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(entries),
            "entry": entries,
        }
        return fhir_response(bundle)

    async def events(self, request: web.Request) -> web.Response:
        project = principal(request).project
        info = await self._subscription(project, request.match_info["id"])
        subscription_id = str(info.resource["id"])
        params = await _params(request)
        first = _int_param(params, "eventsSinceNumber")
        last = _int_param(params, "eventsUntilNumber")
        content = params.get("content")
        if content not in (None, "empty", "id-only", "full-resource"):
            raise BadRequest(f"content must be empty, id-only or full-resource, not {content!r}")
        rows = await self.d.store.events(
            project, subscription_id, first=first, last=last, limit=MAX_EVENTS
        )
        if content is not None:
            rows = [_with_content(r, content) for r in rows]
        counters = await self.d.store.counters(project, subscription_id)
        base = base_url(request)
        if rows:
            bundle = notification_bundle(
                rows,
                status=info.status,
                events_since_start=counters.events_since_start,
                base_url=base,
                status_type="query-event",
            )
        else:
            empty = await self._status(project, info)
            empty["type"] = "query-event"
            bundle = status_bundle(empty)
        return fhir_response(bundle)

    async def binding_token(self, request: web.Request) -> web.Response:
        project = principal(request).project
        info = await self._subscription(project, request.match_info["id"])
        hub = self.d.hub
        if hub is None:
            raise BadRequest("this server does not serve websockets")
        token, binding = hub.issue_token(
            project, str(info.resource["id"]), principal(request).key_id
        )
        ws_base = base_url(request).replace("http", "ws", 1).removesuffix(API_PATH)
        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "token", "valueString": token},
                {
                    "name": "expiration",
                    "valueDateTime": _instant(datetime.fromtimestamp(binding.expires_at, UTC)),
                },
                {"name": "subscription", "valueString": f"Subscription/{info.resource['id']}"},
                {
                    "name": "websocket-url",
                    "valueUrl": f"{ws_base}{WEBSOCKET_PATH}?token={token}",
                },
            ],
        }
        return fhir_response(parameters)

    async def _opener(self, request: web.Request) -> tuple[tuple[str, str], dict[str, Binding]]:
        """Who opens a socket: the owner of the ``token`` in the URL (claimed here), or of the
        key in ``Authorization``; 401 before the upgrade when neither is valid."""
        hub = self.d.hub
        assert hub is not None
        token = request.query.get("token")
        if token is not None:
            claimed = hub.claim(token)
            if claimed is None:
                raise Unauthorized("unknown, expired or already used websocket binding token")
            return claimed.owner, {token: claimed}
        if self.authenticator is not None and "Authorization" in request.headers:
            caller = await self.authenticator.authenticate(request.headers["Authorization"])
            return (caller.project, caller.key_id), {}
        raise Unauthorized(
            "the websocket needs ?token=<token from $get-ws-binding-token> or an API key"
        )

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        hub = self.d.hub
        if hub is None:
            raise BadRequest("this server does not serve websockets")
        # Browsers cannot send an Authorization header with a websocket, so this path is open
        # (app.OPEN_PATHS) and authenticates here: the single-use token is the credential.
        owner, claimed = await self._opener(request)
        socket = web.WebSocketResponse(heartbeat=WS_HEARTBEAT_SECONDS)
        await socket.prepare(request)
        try:
            async for message in socket:
                if message.type != WSMsgType.TEXT:
                    continue
                command, _, token = message.data.strip().partition(" ")
                if command != "bind-with-token":
                    await socket.send_str("error: expected 'bind-with-token <token>'")
                    continue
                token = token.strip()
                binding = claimed.get(token) or hub.claim(token)
                if binding is None:
                    await socket.send_str("error: unknown, expired or already used token")
                    continue
                if binding.owner != owner:
                    _log.warning("websocket token of another key refused", project=owner[0])
                    await socket.send_str("error: the token was issued to another key")
                    continue
                claimed[token] = binding
                await self._bound(socket, binding)
        finally:
            hub.unbind(socket)
        return socket

    async def _bound(self, socket: web.WebSocketResponse, binding: Binding) -> None:
        hub = self.d.hub
        assert hub is not None
        info = await self.d.registry.get(binding.project, binding.subscription_id)
        if info is None:
            await socket.send_str("error: the subscription no longer exists")
            return
        status = await self._status(binding.project, info)
        status["type"] = "handshake"
        hub.bind(binding, socket)
        await socket.send_json(status_bundle(status))
        _log.info("websocket bound", project=binding.project, sub=binding.subscription_id)

    async def resend(self, request: web.Request) -> web.Response:
        project = principal(request).project
        info = await self._subscription(project, request.match_info["id"])
        reference = request.query.get("resource", "")
        resource_type, _, resource_id = reference.partition("/")
        if not resource_type or not resource_id:
            raise BadRequest("$resend needs ?resource=<Type>/<id>")
        try:
            accepted = await self.d.resend(
                project, str(info.resource["id"]), resource_type, resource_id
            )
        except DeliveryError as exc:
            raise NotFound(str(exc)) from exc
        return fhir_response(
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "notification", "valueString": accepted.notification_id},
                    {"name": "eventNumber", "valueInteger": accepted.event_number},
                ],
            }
        )

    async def dead_letters(self, request: web.Request) -> web.Response:
        project = principal(request).project
        count = _int_param(dict(request.query), "_count") or 100
        rows = await self.d.store.dead_letters(
            project, request.query.get("subscription") or None, limit=count
        )
        parameters = {
            "resourceType": "Parameters",
            "parameter": [{"name": "deadLetter", "part": _dead_letter_parts(r)} for r in rows],
        }
        return fhir_response(parameters)

    async def retry(self, request: web.Request) -> web.Response:
        project = principal(request).project
        ids = request.query.getall("id", []) or None
        count = await self.d.retry_dead_letters(
            project, ids, request.query.get("subscription") or None
        )
        return _count(count)

    async def discard(self, request: web.Request) -> web.Response:
        project = principal(request).project
        ids = request.query.getall("id", []) or None
        count = await self.d.store.discard(project, ids, request.query.get("subscription") or None)
        return _count(count)


def _count(count: int) -> web.Response:
    return fhir_response(
        {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": count}]}
    )


def _with_content(row: Delivery, content: str) -> Delivery:
    channel = row.notification.channel.model_copy(update={"content": content})
    return replace(row, notification=row.notification.model_copy(update={"channel": channel}))


def _dead_letter_parts(row: Delivery) -> list[dict[str, Any]]:
    n = row.notification
    return [
        {"name": "id", "valueString": row.notification_id},
        {
            "name": "subscription",
            "valueReference": {"reference": f"Subscription/{n.subscription_id}"},
        },
        {"name": "eventNumber", "valueInteger": row.event_number},
        {"name": "attempts", "valueInteger": row.attempts},
        {"name": "error", "valueString": row.last_error or ""},
        {
            "name": "focus",
            "valueReference": {
                "reference": f"{n.resource_type}/{n.resource_id}/_history/{n.version_id}"
            },
        },
        {"name": "updated", "valueInstant": _instant(row.updated_at)},
    ]


def delivery_routes(
    dispatcher: Dispatcher, authenticator: Authenticator | None = None
) -> list[web.RouteDef]:
    """The delivery operation routes, bound to ``dispatcher``; ``authenticator`` lets a
    websocket be opened with an API key instead of a token in its URL."""
    h = _Handlers(dispatcher, authenticator)
    return [
        web.get(f"{PREFIX}/$status", h.status),
        web.get(WEBSOCKET_PATH, h.websocket),
        web.get(f"{PREFIX}/$dead-letters", h.dead_letters),
        web.post(f"{PREFIX}/$dead-letters/$retry", h.retry),
        web.post(f"{PREFIX}/$dead-letters/$discard", h.discard),
        web.get(f"{PREFIX}/{{id}}/$status", h.status),
        web.get(f"{PREFIX}/{{id}}/$events", h.events),
        web.post(f"{PREFIX}/{{id}}/$events", h.events),
        web.get(f"{PREFIX}/{{id}}/$get-ws-binding-token", h.binding_token),
        web.post(f"{PREFIX}/{{id}}/$get-ws-binding-token", h.binding_token),
        web.post(f"{PREFIX}/{{id}}/$resend", h.resend),
    ]
