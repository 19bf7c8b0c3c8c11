"""The CapabilityStatement at ``/fhir/R4/metadata``: what this server really supports."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fhirbots.schemas.validation import CUSTOM_TYPES, R4B_RESOURCE_TYPES

__all__ = ["capability_statement", "resource_types", "software_version"]

_INTERACTIONS = [
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
]
_ABSTRACT = {"Resource", "DomainResource"}

STARTED = datetime.now(UTC).date().isoformat()
"""The statement describes this process: it is dated when the process started."""


def software_version() -> str:
    """The installed package's version."""
    try:
        return version("fhirbots")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


@cache
def resource_types() -> tuple[str, ...]:
    """Every resource type the datastore accepts: R4B resources and custom types."""
    return tuple(sorted((R4B_RESOURCE_TYPES - _ABSTRACT) | set(CUSTOM_TYPES)))


def capability_statement(
    base: str, search_params: dict[str, list[dict[str, str]]] | None = None
) -> dict[str, Any]:
    """The CapabilityStatement; ``search_params`` maps a type to its supported parameters."""
    params = search_params or {}
    resources = []
    for name in resource_types():
        entry: dict[str, Any] = {
            "type": name,
            "interaction": [{"code": code} for code in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": bool(params),
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
        if name in params:
            entry["interaction"].append({"code": "search-type"})
            entry["searchParam"] = params[name]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": STARTED,
        "kind": "instance",
        "software": {"name": "fhirbots", "version": software_version()},
        "implementation": {"description": "fhirbots FHIR R4 datastore", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "Every request except metadata carries "
                    "'Authorization: Bearer <API key>'; a key is scoped to one project."
                },
                "resource": resources,
                "interaction": [
                    {"code": "transaction"},
                    {"code": "batch"},
                    {"code": "history-system"},
                ],
            }
        ],
    }
