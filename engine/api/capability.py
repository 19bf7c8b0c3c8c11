"""The CapabilityStatement at ``/fhir/R4/metadata``: what this server really supports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from fhirbots.engine.api.operation_definitions import Operation, served_operations
from fhirbots.engine.settings import API_PATH
from fhirbots.schemas.validation import CUSTOM_TYPES, R4B_RESOURCE_TYPES
from fhirbots.subscriptions.search import Registry

__all__ = ["Served", "capability_statement", "resource_types", "software_version"]

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


@cache
def _reference_params(registry: Registry) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per type, the ``_include`` values (its reference parameters) and the ``_revinclude``
    values (reference parameters of other types that can point at it)."""
    includes: dict[str, list[str]] = {}
    revincludes: dict[str, list[str]] = {}
    for source in sorted(registry.resource_types):
        for code in registry.codes(source):
            definition = registry.get(source, code)
            if definition is None or not definition.supported or definition.type != "reference":
                continue
            includes.setdefault(source, []).append(f"{source}:{code}")
            for target in definition.targets:
                revincludes.setdefault(target, []).append(f"{source}:{code}")
    return includes, revincludes


@cache
def _search_params(registry: Registry) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for resource_type in sorted(registry.resource_types):
        params = []
        for code in registry.codes(resource_type):
            definition = registry.get(resource_type, code)
            if definition is not None and definition.supported:
                params.append({"name": code, "type": definition.type, "definition": definition.url})
        out[resource_type] = params
    return out


@dataclass(frozen=True)
class Served:
    """What the running application serves, read off its routes."""

    routes: frozenset[tuple[str, str]]
    """``(method, path below the API path)`` pairs, e.g. ``("PUT", "/{type}")``."""
    operations: tuple[Operation, ...]
    conditional_delete: str
    """``single`` or ``multiple`` (when ``DELETE /{type}?search`` is served)."""

    @classmethod
    def of(cls, app: web.Application, *, conditional_delete: str = "single") -> Served:
        routes = frozenset(
            (route.method, route.resource.canonical.removeprefix(API_PATH))
            for route in app.router.routes()
            if route.resource is not None and route.resource.canonical.startswith(API_PATH)
        )
        operations = tuple(served_operations(app).values())
        return cls(routes, operations, conditional_delete)

    def has(self, method: str, path: str) -> bool:
        return (method, path) in self.routes


def _operation_entry(operation: Operation, base: str) -> dict[str, str]:
    return {"name": operation.code, "definition": f"{base}/OperationDefinition/{operation.id}"}


def capability_statement(base: str, registry: Registry, served: Served) -> dict[str, Any]:
    """The CapabilityStatement of the API ``served`` describes, searching with ``registry``."""
    params = _search_params(registry)
    includes, revincludes = _reference_params(registry)
    conditional_update = served.has("PUT", "/{type}")
    conditional_delete = served.conditional_delete if served.has("DELETE", "/{type}") else None
    resources = []
    for name in resource_types():
        entry: dict[str, Any] = {
            "type": name,
            "interaction": [{"code": code} for code in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": conditional_update,
            "conditionalDelete": conditional_delete or "not-supported",
            "referencePolicy": ["literal", "logical", "local"],
        }
        if name in params:
            entry["interaction"].append({"code": "search-type"})
            entry["searchInclude"] = includes.get(name, [])
            entry["searchRevInclude"] = revincludes.get(name, [])
            entry["searchParam"] = params[name]
        operations = [
            _operation_entry(op, base)
            for op in served.operations
            if (op.type_level or op.instance) and (name in op.types or "*" in op.types)
        ]
        if operations:
            entry["operation"] = operations
        resources.append(entry)
    patch_formats = ["application/json-patch+json"]
    if served.has("PATCH", "/{type}/{id}"):
        patch_formats += ["application/merge-patch+json", "application/fhir+json"]
    system = [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}]
    if served.has("GET", ""):
        system.append({"code": "search-system"})
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": STARTED,
        "kind": "instance",
        "software": {"name": "fhirbots", "version": software_version()},
        "implementation": {"description": "fhirbots FHIR R4 datastore", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": patch_formats,
        "rest": [
            {
                "mode": "server",
                "security": {
                    "description": "Every request except metadata carries "
                    "'Authorization: Bearer <API key>'; a key is scoped to one project."
                },
                "resource": resources,
                "interaction": system,
                "operation": [_operation_entry(op, base) for op in served.operations if op.system]
                or None,
            }
        ],
    }
