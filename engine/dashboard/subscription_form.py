"""The form that defines a new Subscription: its fields, the R4 Subscription they describe,
and the refusals of the FHIR service's write checks placed beside the fields they name.

``POST /subscriptions/new`` creates the Subscription through the FHIR service, whose write
checks refuse what the engine cannot evaluate; each issue of the OperationOutcome is shown
beside its field (:func:`field_of`), the rest above the form. The form's own checks (a
criterion, an endpoint, at least one interaction, headers as ``Name: value``) are shown with
the service's, so every error shows at once. A creation is audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from fhirbots.engine.dashboard.audit import audit_action
from fhirbots.engine.dashboard.context import caller, deps, render
from fhirbots.engine.dashboard.subscriptions import done
from fhirbots.engine.delivery.policy import SECRET_URLS
from fhirbots.engine.delivery.subscriptions import BACKPORT_CONTENT_URL
from fhirbots.engine.errors import FhirError
from fhirbots.engine.storage.model import CreateOp, WriteContext
from fhirbots.subscriptions.definitions import FHIRPATH_CRITERIA_URL, INTERACTION_URL
from fhirbots.subscriptions.model import DEFAULT_INTERACTIONS

__all__ = [
    "INTERACTIONS",
    "SECRET_URL",
    "NewSubscription",
    "build_subscription",
    "field_of",
    "routes",
]

SECRET_URL = next(u for u in SECRET_URLS if u.startswith("https://fhirbots.dev/"))
"""The HMAC secret extension the form writes (the engine also reads Medplum's URLs)."""

CHANNEL_TYPES = ("rest-hook", "websocket", "message")
"""Channel types the form offers (``email`` is refused by the engine)."""

PAYLOAD_TYPES = ("", "application/fhir+json", "application/json")
"""``channel.payload`` choices; empty means none (R4: an empty notification)."""

CONTENT_LEVELS = ("", "empty", "id-only", "full-resource")
"""Backport IG payload content choices; empty means the engine's default."""

INTERACTIONS = ("create", "update", "delete")
"""What a Subscription can fire on, in the order the form offers them; without the
interactions extension it fires on the engine's ``DEFAULT_INTERACTIONS``."""

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
        "interactions": [i for i in INTERACTIONS if i in DEFAULT_INTERACTIONS],
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
    await audit_action(
        services.fhir,
        principal,
        "subscription-create",
        f"Subscription/{stored.id} created: {resource['criteria']}",
        action="C",
        entity=f"Subscription/{stored.id}",
    )
    raise done(stored.id, "created")


def routes() -> list[web.RouteDef]:
    """Routes of the form."""
    return [web.get("/subscriptions/new", new_form), web.post("/subscriptions/new", create)]
