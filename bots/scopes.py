"""Access-scope checks for a bot's FHIR calls, made by the engine before the gateway runs.

:func:`check_call` validates the shape of a call coming from a worker and refuses anything
outside the bot's ``access`` scopes with :class:`fhirbots.bots.errors.AccessDeniedError`. A
transaction is checked entry by entry, so a bot cannot smuggle a write through a Bundle.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fhirbots.bots.errors import AccessDeniedError, FhirGatewayError
from fhirbots.schemas.bot import Bot

__all__ = ["FHIR_METHODS", "check_call", "required_permissions"]

FHIR_METHODS = frozenset({"read", "create", "update", "patch", "delete", "search", "transaction"})
"""Calls a bot's ``fhir`` object can make."""

_HTTP_INTERACTIONS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _text(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise FhirGatewayError(f"{key} must be a non-empty string", code="invalid")
    return value


def _resource_type_of(args: dict[str, Any]) -> str:
    resource = args.get("resource")
    if not isinstance(resource, dict):
        raise FhirGatewayError("resource must be a JSON object", code="invalid")
    kind = resource.get("resourceType")
    if not isinstance(kind, str) or not kind:
        raise FhirGatewayError("resource has no resourceType", code="invalid")
    return kind


def _entry_permission(entry: Any) -> tuple[str, str]:
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise FhirGatewayError("every transaction entry needs a request", code="invalid")
    request = entry["request"]
    method = str(request.get("method", "")).upper()
    url = str(request.get("url", ""))
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if not parts:
        raise FhirGatewayError(f"transaction entry has no resource type in {url!r}", code="invalid")
    if method == "GET":
        is_read = len(parts) >= 2 and "?" not in url
        return parts[0], "read" if is_read else "search"
    if method not in _HTTP_INTERACTIONS:
        raise FhirGatewayError(f"unsupported transaction method {method!r}", code="invalid")
    return parts[0], _HTTP_INTERACTIONS[method]


def required_permissions(method: str, args: dict[str, Any]) -> list[tuple[str, str]]:
    """(resource type, interaction) pairs a call needs.

    Raises:
        FhirGatewayError: the call is malformed (status 400).
    """
    if method not in FHIR_METHODS:
        raise FhirGatewayError(f"unknown FHIR call {method!r}", code="not-supported")
    if method in ("create", "update"):
        return [(_resource_type_of(args), method)]
    if method == "transaction":
        bundle = args.get("bundle")
        if not isinstance(bundle, dict) or bundle.get("type") not in ("transaction", "batch"):
            raise FhirGatewayError("transaction needs a Bundle of type transaction or batch")
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            raise FhirGatewayError("Bundle.entry must be a list", code="invalid")
        return [_entry_permission(entry) for entry in entries]
    return [(_text(args, "resource_type"), method)]


def check_call(bot: Bot, method: str, args: dict[str, Any]) -> None:
    """Refuse a call outside ``bot``'s access scopes.

    Raises:
        AccessDeniedError: naming the interaction and type, and the scope that would allow it.
        FhirGatewayError: the call is malformed.
    """
    for resource_type, interaction in required_permissions(method, args):
        if not bot.allows(resource_type, interaction):
            raise AccessDeniedError(
                f"{bot.reference} may not {interaction} {resource_type}: add "
                f'{{"resourceType": "{resource_type}", "interaction": ["{interaction}"]}} '
                "to the bot's access scopes"
            )
