"""The engine's operations as OperationDefinition resources, and where the API serves them.

Which operations exist, and at which level (system, type, instance) and on which types, is read
off the routes the application serves (:func:`served_operations`), so the CapabilityStatement
cannot announce an operation that is not there. What each operation takes and returns is
written here; a test fails when a served operation has no definition.

Each definition is readable at its canonical URL, ``<base>/OperationDefinition/<id>``; those
ids are reserved (a stored OperationDefinition of a project can use any other id).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fhirbots.engine.settings import API_PATH

__all__ = ["DEFINITIONS", "Operation", "definition_resource", "served_operations"]

_ANY = "*"
"""A route on ``{type}``: the operation applies to every type."""


@dataclass(frozen=True)
class _Param:
    name: str
    use: str  # "in" | "out"
    type: str | None
    documentation: str
    min: int = 0
    max: str = "1"


@dataclass(frozen=True)
class _Definition:
    code: str
    title: str
    description: str
    affects_state: bool
    parameters: tuple[_Param, ...]


def _in(
    name: str, kind: str | None, doc: str, *, required: bool = False, many: bool = False
) -> _Param:
    return _Param(name, "in", kind, doc, 1 if required else 0, "*" if many else "1")


def _out(name: str, kind: str | None, doc: str, *, many: bool = False) -> _Param:
    return _Param(name, "out", kind, doc, 0, "*" if many else "1")


_RETURN_BUNDLE = _out("return", "Bundle", "the answer")
_RETURN_PARAMETERS = _out("return", "Parameters", "the answer")
_COUNT = _out("return", "Parameters", "`count`: how many dead letters were affected")
_DEAD_LETTER_FILTER = (
    _in("id", "string", "a dead letter's id (repeatable); all of the project's without", many=True),
    _in("subscription", "string", "only dead letters of this Subscription id"),
)

DEFINITIONS: dict[str, _Definition] = {
    d.code: d
    for d in (
        _Definition(
            "execute",
            "Run a bot",
            "Runs the Bot with the request body (POST) or the query (GET) as its input and "
            "answers with its output; with `Prefer: respond-async`, 202 and a job URL.",
            True,
            (_in("input", None, "the body or the query, as the bot's input"), _RETURN_PARAMETERS),
        ),
        _Definition(
            "deploy",
            "Deploy bot code",
            "Checks and stores new source code as a new version of the Bot; the same source "
            "again is reported unchanged.",
            True,
            (_in("code", "string", "the bot's Python source", required=True), _RETURN_PARAMETERS),
        ),
        _Definition(
            "job",
            "Status of an asynchronous execution",
            "202 with Retry-After while the execution runs, then its output.",
            False,
            (_in("job", "string", "the job id from Content-Location", required=True),),
        ),
        _Definition(
            "explain",
            "Explain a subscription's decision",
            "For a resource (and optionally its previous version), says for each active "
            "Subscription whether it fires and why not.",
            False,
            (
                _in("resource", "Resource", "the changed resource", required=True),
                _in("previous", "Resource", "its previous version"),
                _in("subscription", "string", "only this Subscription id"),
                _RETURN_PARAMETERS,
            ),
        ),
        _Definition(
            "status",
            "Subscription status",
            "SubscriptionStatus (query-status) of one subscription, or of the project's.",
            False,
            (_in("id", "string", "Subscription ids, comma-separated", many=True), _RETURN_BUNDLE),
        ),
        _Definition(
            "events",
            "Retained notifications",
            "Notifications of the subscription in an event-number range (query-event).",
            False,
            (
                _in("eventsSinceNumber", "string", "first event number"),
                _in("eventsUntilNumber", "string", "last event number"),
                _in("content", "code", "empty | id-only | full-resource"),
                _RETURN_BUNDLE,
            ),
        ),
        _Definition(
            "resend",
            "Send a resource again",
            "Sends the resource's current version to the subscription as a new notification.",
            True,
            (
                _in("resource", "string", "the resource, as Type/id", required=True),
                _RETURN_PARAMETERS,
            ),
        ),
        _Definition(
            "get-ws-binding-token",
            "Websocket binding token",
            "A short-lived, single-use token that binds one websocket to the subscription.",
            False,
            (
                _out("token", "string", "the token"),
                _out("expiration", "dateTime", "when it expires"),
                _out("subscription", "string", "the subscription it binds"),
                _out("websocket-url", "url", "where to connect"),
            ),
        ),
        _Definition(
            "dead-letters",
            "Dead letters",
            "Notifications whose delivery gave up, with their last error.",
            False,
            (
                _in("subscription", "string", "only this Subscription id"),
                _in("_count", "integer", "at most this many"),
                _RETURN_PARAMETERS,
            ),
        ),
        _Definition(
            "dead-letters-retry",
            "Retry dead letters",
            "Queues dead notifications again, with their event numbers.",
            True,
            (*_DEAD_LETTER_FILTER, _COUNT),
        ),
        _Definition(
            "dead-letters-discard",
            "Discard dead letters",
            "Drops dead notifications for good.",
            True,
            (*_DEAD_LETTER_FILTER, _COUNT),
        ),
        _Definition(
            "validate",
            "Validate a resource",
            "Every problem the resource has for the mode (create, update, delete), as an "
            "OperationOutcome; nothing is written.",
            False,
            (
                _in("resource", "Resource", "the resource (or the body itself)"),
                _in("mode", "code", "create | update | delete"),
                _in("profile", "uri", "accepted, not checked"),
                _out("return", "OperationOutcome", "the problems found"),
            ),
        ),
        _Definition(
            "everything",
            "Patient everything",
            "The patient and every resource of its compartment, paged.",
            False,
            (
                _in("_since", "instant", "only resources changed since"),
                _in("_type", "string", "only these types, comma-separated"),
                _in("_count", "integer", "page size"),
                _RETURN_BUNDLE,
            ),
        ),
        _Definition(
            "reindex",
            "Reindex resources",
            "Indexes the project's resources again for its SearchParameters; a job to follow.",
            True,
            (_in("type", "string", "only these types"), _RETURN_PARAMETERS),
        ),
    )
}


@dataclass
class Operation:
    """One operation the API serves: its code and where."""

    code: str
    system: bool = False
    types: set[str] = field(default_factory=set)
    type_level: bool = False
    instance: bool = False

    @property
    def id(self) -> str:
        return f"fhirbots-{self.code}"


_SEGMENTS = re.compile(r"\$([A-Za-z0-9-]+)")


def served_operations(app: web.Application) -> dict[str, Operation]:
    """The operations ``app`` serves under the API path, by code (``dead-letters/$retry`` is
    ``dead-letters-retry``); the websocket endpoint is a protocol, not an operation."""
    found: dict[str, Operation] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None or not resource.canonical.startswith(API_PATH):
            continue
        path = resource.canonical.removeprefix(API_PATH).strip("/")
        codes = _SEGMENTS.findall(path)
        if not codes or codes == ["websocket"]:
            continue
        code = "-".join(codes)
        head = path.split("/$", 1)[0].split("/") if not path.startswith("$") else []
        operation = found.setdefault(code, Operation(code))
        if not head:
            operation.system = True
            continue
        operation.types.add(_ANY if head[0].startswith("{") else head[0])
        if len(head) > 1:
            operation.instance = True
        else:
            operation.type_level = True
    return found


def _parameter(param: _Param) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": param.name,
        "use": param.use,
        "min": param.min,
        "max": param.max,
        "documentation": param.documentation,
    }
    if param.type is not None:
        out["type"] = param.type
    return out


def definition_resource(operation: Operation, base: str) -> dict[str, Any]:
    """The OperationDefinition of ``operation`` (its canonical URL is under ``base``)."""
    definition = DEFINITIONS[operation.code]
    resource: dict[str, Any] = {
        "resourceType": "OperationDefinition",
        "id": operation.id,
        "url": f"{base}/OperationDefinition/{operation.id}",
        "name": "".join(part.title() for part in operation.code.split("-")),
        "title": definition.title,
        "status": "active",
        "kind": "operation",
        "description": definition.description,
        "affectsState": definition.affects_state,
        "code": operation.code,
        "system": operation.system,
        "type": operation.type_level,
        "instance": operation.instance,
        "parameter": [_parameter(p) for p in definition.parameters],
    }
    types = sorted(t for t in operation.types if t != _ANY)
    if types and _ANY not in operation.types:
        resource["resource"] = types
    return resource


def operation_ids(operations: Iterable[Operation]) -> dict[str, Operation]:
    """``operations`` by the id of their OperationDefinition."""
    return {operation.id: operation for operation in operations}
