"""An OpenAPI 3.0 description of the REST API, made from the routes the running application
serves (``/fhir/R4/openapi.json``), so it can never list a route that is not there or miss one
that is.

FHIR's own description of the API is the CapabilityStatement (``/metadata``); this one is for
HTTP tooling: client generators, gateways, and the API fuzzer CI runs against the engine.
Resource bodies are described as FHIR JSON objects with a ``resourceType``; their structure is
FHIR's, checked by the server (a 422 OperationOutcome names what is wrong).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from fhirbots.engine.api.capability import resource_types, software_version
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.web.http import FHIR_JSON, base_url, fhir_response

__all__ = ["OPENAPI_PATH", "openapi_document", "routes"]

OPENAPI_PATH = f"{API_PATH}/openapi.json"

_PARAM = re.compile(r"{([^}/:]+)(?::[^}]*)?}")

_ID = {"type": "string", "pattern": r"^[A-Za-z0-9\-.]{1,64}$"}

_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "type": {"type": "string"},  # replaced by the resource types at build time
    "id": _ID,
    "vid": {"type": "string", "pattern": r"^[0-9]{1,18}$"},
    "job": {"type": "string"},
    "version": {"type": "string"},
}

_SEARCH_PARAMETERS = [
    ("_count", {"type": "integer", "minimum": 0}),
    ("_offset", {"type": "integer", "minimum": 0}),
    ("_sort", {"type": "string"}),
    ("_summary", {"type": "string", "enum": ["true", "false", "text", "data", "count"]}),
    ("_total", {"type": "string", "enum": ["none", "estimate", "accurate"]}),
    ("_elements", {"type": "string"}),
    ("_include", {"type": "string"}),
    ("_revinclude", {"type": "string"}),
    ("_id", {"type": "string"}),
    ("_lastUpdated", {"type": "string"}),
]

_RESOURCE = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}, "id": _ID},
    "additionalProperties": True,
}

_OUTCOME = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {"type": "array", "items": {"type": "object"}},
    },
}

_BUNDLE = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["batch", "transaction"]},
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": _RESOURCE,
                    "request": {
                        "type": "object",
                        "required": ["method", "url"],
                        "properties": {
                            "method": {
                                "type": "string",
                                "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
                            },
                            "url": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}

_PATCH_BODIES = {
    "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
    "application/merge-patch+json": {"schema": {"type": "object"}},
    FHIR_JSON: {"schema": _RESOURCE},
}

_OPEN = frozenset({f"{API_PATH}/metadata", OPENAPI_PATH})


def _summary(handler: Any) -> str:
    doc = (getattr(handler, "__doc__", None) or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else ""


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path.removeprefix(API_PATH)).strip("_")
    return f"{method.lower()}_{words or 'root'}"


def _request_body(method: str, path: str) -> dict[str, Any] | None:
    if method == "PATCH":
        return {"required": True, "content": _PATCH_BODIES}
    if method not in ("POST", "PUT"):
        return None
    if path.rstrip("/") == API_PATH:
        return {"required": True, "content": {FHIR_JSON: {"schema": _BUNDLE}}}
    if path.endswith("_search"):
        form = {"type": "object", "additionalProperties": {"type": "string"}}
        return {"content": {"application/x-www-form-urlencoded": {"schema": form}}}
    required = "$" not in path  # operations take an optional Parameters body
    return {"required": required, "content": {FHIR_JSON: {"schema": _RESOURCE}}}


def _operation(method: str, path: str, handler: Any, types: list[str]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = []
    for name in _PARAM.findall(path):
        schema = {"type": "string", "enum": types} if name == "type" else _PATH_SCHEMAS.get(name)
        parameters.append(
            {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}
        )
    if method == "GET" and (path.endswith("{type}") or path.rstrip("/") == API_PATH):
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in _SEARCH_PARAMETERS
        ]
    operation: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": _summary(handler),
        "parameters": parameters,
        "responses": {
            "2XX": {"description": "success", "content": {FHIR_JSON: {"schema": _RESOURCE}}},
            "default": {
                "description": "an error, as an OperationOutcome",
                "content": {FHIR_JSON: {"schema": _OUTCOME}},
            },
        },
    }
    body = _request_body(method, path)
    if body is not None:
        operation["requestBody"] = body
    if path in _OPEN:
        operation["security"] = []
    return operation


def openapi_document(app: web.Application, server_url: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of the FHIR API ``app`` serves at ``server_url``."""
    types = list(resource_types())
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None or route.method in ("HEAD", "*"):
            continue
        path = _PARAM.sub(r"{\1}", resource.canonical)
        if not path.startswith(API_PATH):
            continue
        operations = paths.setdefault(path.removeprefix(API_PATH) or "/", {})
        operations[route.method.lower()] = _operation(route.method, path, route.handler, types)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "fhirbots FHIR R4 API",
            "version": software_version(),
            "description": "FHIR R4 REST API with subscriptions and bots; FHIR's own "
            "description is the CapabilityStatement at /metadata.",
        },
        "servers": [{"url": server_url}],
        "security": [{"apiKey": []}],
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "a project's API key"}
            }
        },
        "paths": dict(sorted(paths.items())),
    }


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI description of this API (no authentication)."""
    response = fhir_response(openapi_document(request.app, base_url(request)))
    response.content_type = "application/json"
    return response


def routes() -> list[web.RouteDef]:
    """The route serving the description."""
    return [web.get(OPENAPI_PATH, openapi)]
