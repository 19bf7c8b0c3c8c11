"""Handlers of the FHIR REST interactions (everything but search, which lives in
:mod:`fhirbots.engine.api.search`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from fhirbots.engine.api.capability import Served, capability_statement
from fhirbots.engine.api.everything import everything_instance, everything_type
from fhirbots.engine.api.operation_definitions import (
    definition_resource,
    operation_ids,
    served_operations,
)
from fhirbots.engine.api.params import int_param, since_param
from fhirbots.engine.api.preconditions import not_modified
from fhirbots.engine.errors import BadRequest, Issue
from fhirbots.engine.fhir.bundles import process_bundle
from fhirbots.engine.fhir.conditional import (
    conditional_delete,
    conditional_patch,
    conditional_update,
)
from fhirbots.engine.fhir.integrity import cascade_requested
from fhirbots.engine.fhir.outcome import operation_outcome
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.storage.model import HistoryPage, StoredResource, WriteResult
from fhirbots.engine.storage.planner import format_instant
from fhirbots.engine.web.context import principal, services, write_context
from fhirbots.engine.web.http import base_url, fhir_response, prefer, read_json, version_headers
from fhirbots.subscriptions.definitions import criteria_warnings

__all__ = ["routes"]

DEFAULT_COUNT = 50
"""Page size of history when ``_count`` is not given."""

MAX_COUNT = 1000
"""Largest page a client may ask for."""

_FORMAT_PARAMS = frozenset({"_format", "_pretty"})
"""Query parameters that shape the answer and never select resources."""


def _if_match(request: web.Request) -> int | None:
    value = request.headers.get("If-Match")
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise BadRequest(f'If-Match {value!r} is not a version ETag like W/"3"')
    return int(text)


def _location(request: web.Request, stored: StoredResource) -> str:
    base = base_url(request)
    return f"{base}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"


def _write_response(request: web.Request, result: WriteResult, status: int) -> web.Response:
    stored = result.stored
    assert stored is not None
    headers = version_headers(stored, _location(request, stored))
    wanted = prefer(request, "return", "representation")
    if wanted == "minimal":
        return fhir_response(None, status=status, headers=headers)
    if wanted == "OperationOutcome":
        outcome = operation_outcome(
            [
                Issue(
                    f"{stored.resource_type}/{stored.id} version {stored.version_id}",
                    severity="information",
                    code="informational",
                ),
                *(  # result parameters a Subscription's criteria carry (ignored)
                    Issue(warning, severity="warning", code="informational")
                    for warning in criteria_warnings(stored.content or {})
                ),
            ]
        )
        return fhir_response(outcome, status=status, headers=headers)
    return fhir_response(stored.content, status=status, headers=headers)


async def metadata(request: web.Request) -> web.Response:
    """The CapabilityStatement (no authentication)."""
    svc = services(request)
    multiple = svc.settings.conditional_delete_multiple
    served = Served.of(request.app, conditional_delete="multiple" if multiple else "single")
    return fhir_response(capability_statement(base_url(request), svc.search.registry, served))


async def operation_definition(request: web.Request) -> web.Response:
    """read of an OperationDefinition: the engine's own at their canonical URLs, else the
    project's."""
    own = operation_ids(served_operations(request.app).values()).get(request.match_info["id"])
    if own is None:
        return await read(request)
    return fhir_response(definition_resource(own, base_url(request)))


def _search_of(request: web.Request) -> str:
    """The request's query string without the format parameters: the search of a conditional
    interaction ("" when there is none)."""
    kept = [(k, v) for k, v in request.query.items() if k not in _FORMAT_PARAMS]
    return urlencode(kept)


def _if_none_exist(request: web.Request) -> str | None:
    """``If-None-Exist``, or the query of ``POST Type?search``, which is the same conditional
    create (as Aidbox has it, and fhirpy's ``get_or_create`` sends it); both at once is a 400."""
    header = request.headers.get("If-None-Exist")
    query = _search_of(request)
    if header is not None and query:
        raise BadRequest(
            "conditional create takes its search from If-None-Exist or from the URL's query, "
            "not both"
        )
    return header or query or None


async def create(request: web.Request) -> web.Response:
    """create, and conditional create with ``If-None-Exist`` or ``POST Type?search``."""
    resource_type = request.match_info["type"]
    body = await read_json(request)
    if isinstance(body, dict) and body.get("resourceType") != resource_type:
        raise BadRequest(
            f"the body's resourceType {body.get('resourceType')!r} is not {resource_type!r}"
        )
    result = await services(request).fhir.create(
        principal(request).project,
        body,
        write_context(request),
        if_none_exist=_if_none_exist(request),
    )
    return _write_response(request, result, 201 if result.created else 200)


async def read(request: web.Request) -> web.Response:
    """read: 404 unknown, 410 deleted."""
    stored = await services(request).fhir.read(
        principal(request).project, request.match_info["type"], request.match_info["id"]
    )
    unchanged = not_modified(request, stored)
    if unchanged is not None:
        return unchanged
    return fhir_response(stored.content, headers=version_headers(stored))


async def update(request: web.Request) -> web.Response:
    """update, or update-as-create with the client's id."""
    result = await services(request).fhir.update(
        principal(request).project,
        request.match_info["type"],
        request.match_info["id"],
        await read_json(request),
        write_context(request),
        if_match=_if_match(request),
    )
    return _write_response(request, result, 201 if result.created else 200)


async def patch(request: web.Request) -> web.Response:
    """JSON Patch, JSON Merge Patch or FHIRPath Patch (:mod:`fhirbots.engine.fhir.patch`)."""
    result = await services(request).fhir.patch(
        principal(request).project,
        request.match_info["type"],
        request.match_info["id"],
        await read_json(request, patch=True),
        write_context(request),
        if_match=_if_match(request),
        media_type=request.content_type,
    )
    return _write_response(request, result, 200)


async def update_by_search(request: web.Request) -> web.Response:
    """Conditional update, ``PUT Type?search`` (:mod:`fhirbots.engine.fhir.conditional`)."""
    result = await conditional_update(
        services(request).fhir,
        principal(request).project,
        request.match_info["type"],
        _search_of(request),
        await read_json(request),
        write_context(request),
        if_match=_if_match(request),
    )
    return _write_response(request, result, 201 if result.created else 200)


async def patch_by_search(request: web.Request) -> web.Response:
    """Conditional patch, ``PATCH Type?search``."""
    result = await conditional_patch(
        services(request).fhir,
        principal(request).project,
        request.match_info["type"],
        _search_of(request),
        await read_json(request, patch=True),
        write_context(request),
        media_type=request.content_type,
        if_match=_if_match(request),
    )
    return _write_response(request, result, 200)


async def delete_by_search(request: web.Request) -> web.Response:
    """Conditional delete, ``DELETE Type?search``: 204 whether it deleted none, one or (when
    allowed) several."""
    svc = services(request)
    await conditional_delete(
        svc.fhir,
        principal(request).project,
        request.match_info["type"],
        _search_of(request),
        write_context(request),
        multiple=svc.settings.conditional_delete_multiple,
    )
    return fhir_response(None, status=204)


async def delete(request: web.Request) -> web.Response:
    """delete: 204; the history keeps a tombstone."""
    result = await services(request).fhir.delete(
        principal(request).project,
        request.match_info["type"],
        request.match_info["id"],
        write_context(request),
        if_match=_if_match(request),
        cascade=cascade_requested(request.query.get("_cascade")),
    )
    headers = version_headers(result.stored) if result.stored is not None else None
    return fhir_response(None, status=204, headers=headers)


async def vread(request: web.Request) -> web.Response:
    """vread."""
    stored = await services(request).fhir.vread(
        principal(request).project,
        request.match_info["type"],
        request.match_info["id"],
        request.match_info["vid"],
    )
    unchanged = not_modified(request, stored)
    if unchanged is not None:
        return unchanged
    return fhir_response(stored.content, headers=version_headers(stored))


def _history_bundle(
    request: web.Request, page: HistoryPage, count: int, offset: int
) -> dict[str, Any]:
    base = base_url(request)
    path = request.path.removeprefix(API_PATH)
    query = {k: v for k, v in request.query.items() if k not in ("_count", "_offset")}

    def link(relation: str, at: int) -> dict[str, str]:
        params = "&".join(
            [*(f"{k}={v}" for k, v in query.items()), f"_count={count}", f"_offset={at}"]
        )
        return {"relation": relation, "url": f"{base}{path}?{params}"}

    links = [link("self", offset)]
    if offset + count < page.total:
        links.append(link("next", offset + count))
    if offset > 0:
        links.append(link("previous", max(0, offset - count)))
    entries = []
    for stored in page.entries:
        entry: dict[str, Any] = {"fullUrl": f"{base}/{stored.resource_type}/{stored.id}"}
        if stored.content is not None:
            entry["resource"] = stored.content
        url = (
            stored.resource_type
            if stored.method == "POST"
            else f"{stored.resource_type}/{stored.id}"
        )
        entry["request"] = {"method": stored.method, "url": url}
        entry["response"] = {
            "status": {"POST": "201", "PUT": "200", "DELETE": "204"}[stored.method],
            "etag": f'W/"{stored.version_id}"',
            "lastModified": format_instant(stored.last_updated),
        }
        entries.append(entry)
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": page.total,
        "link": links,
        "entry": entries,
    }


async def _history(
    request: web.Request, resource_type: str | None, resource_id: str | None
) -> web.Response:
    count = int_param(request, "_count", DEFAULT_COUNT, MAX_COUNT)
    offset = int_param(request, "_offset", 0)
    page = await services(request).fhir.history(
        principal(request).project,
        resource_type,
        resource_id,
        since=since_param(request),
        count=count,
        offset=offset,
    )
    return fhir_response(_history_bundle(request, page, count, offset))


async def history_system(request: web.Request) -> web.Response:
    """History of every resource of the project."""
    return await _history(request, None, None)


async def history_type(request: web.Request) -> web.Response:
    """History of one type."""
    return await _history(request, request.match_info["type"], None)


async def history_instance(request: web.Request) -> web.Response:
    """History of one resource."""
    return await _history(request, request.match_info["type"], request.match_info["id"])


async def bundle(request: web.Request) -> web.Response:
    """Transaction or batch Bundle."""
    svc = services(request)
    result = await process_bundle(
        svc.fhir,
        principal(request).project,
        await read_json(request),
        write_context(request),
        get=svc.get_url,
        # Entries carry status and location only, unless the client asks for the resources.
        representation=prefer(request, "return", "minimal") == "representation",
        conditional_delete_multiple=svc.settings.conditional_delete_multiple,
    )
    return fhir_response(result)


def routes() -> list[web.RouteDef]:
    """The routes, most specific first (``_history`` before ``{id}``)."""
    base = API_PATH
    return [
        web.get(f"{base}/metadata", metadata),
        web.get(f"{base}/_history", history_system),
        web.post(base, bundle),
        web.post(f"{base}/", bundle),
        web.get(f"{base}/{{type}}/_history", history_type),
        web.get(f"{base}/{{type}}/{{id}}/_history", history_instance),
        web.get(f"{base}/{{type}}/{{id}}/_history/{{vid}}", vread),
        web.post(f"{base}/{{type}}", create),
        web.put(f"{base}/{{type}}", update_by_search),
        web.patch(f"{base}/{{type}}", patch_by_search),
        web.delete(f"{base}/{{type}}", delete_by_search),
        web.get(f"{base}/Patient/$everything", everything_type),
        web.get(f"{base}/Patient/{{id}}/$everything", everything_instance),
        web.get(f"{base}/{{type:OperationDefinition}}/{{id}}", operation_definition),
        web.get(f"{base}/{{type}}/{{id}}", read),
        web.put(f"{base}/{{type}}/{{id}}", update),
        web.patch(f"{base}/{{type}}/{{id}}", patch),
        web.delete(f"{base}/{{type}}/{{id}}", delete),
    ]
