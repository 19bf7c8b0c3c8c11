"""The CapabilityStatement at ``/fhir/R4/metadata``: what this server really supports."""

from __future__ import annotations

import pkgutil
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import fhir.resources.R4B as r4b

from schemas.validation import CUSTOM_TYPES, is_known_type

__all__ = ["capability_statement", "resource_types"]

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
_NOT_RESOURCES = {"Resource", "DomainResource", "Element", "BackboneElement"}

STARTED = datetime.now(UTC).date().isoformat()
"""The statement describes this process: it is dated when the process started."""


def _software_version() -> str:
    try:
        return version("fhirbots")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


def _camel_types() -> list[str]:
    found: list[str] = []
    for module in pkgutil.iter_modules(r4b.__path__):
        mod = __import__(f"fhir.resources.R4B.{module.name}", fromlist=["*"])
        for attr in dir(mod):
            if attr.lower() == module.name and attr not in _NOT_RESOURCES and is_known_type(attr):
                found.append(attr)
    return found


@cache
def resource_types() -> tuple[str, ...]:
    """Every resource type the datastore accepts: R4B resources and custom types."""
    return tuple(sorted(set(_camel_types()) | set(CUSTOM_TYPES)))


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
        "software": {"name": "fhirbots", "version": _software_version()},
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
