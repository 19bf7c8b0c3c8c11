"""``Patient/$everything`` over HTTP (:mod:`fhirbots.engine.fhir.everything`): a ``searchset``
Bundle with its total and ``next``/``previous`` links that page with ``_count`` and
``_offset``."""

from __future__ import annotations

from aiohttp import web

from fhirbots.engine.api.params import int_param, since_param
from fhirbots.engine.errors import BadRequest
from fhirbots.engine.fhir.everything import patient_everything
from fhirbots.engine.fhir.search import DEFAULT_PAGE, MAX_PAGE, SearchResult
from fhirbots.engine.fhir.searchset import searchset
from fhirbots.engine.fhir.service import check_type
from fhirbots.engine.web.context import principal, services
from fhirbots.engine.web.http import base_url, fhir_response
from fhirbots.subscriptions.search import SearchQuery

__all__ = ["everything_instance", "everything_type"]

_KNOWN = frozenset({"_count", "_offset", "_since", "_type", "_format", "_pretty"})
"""Parameters ``$everything`` takes; ``start``, ``end`` and others are refused, not ignored."""


def _types(request: web.Request) -> frozenset[str] | None:
    values = request.query.getall("_type", [])
    if not values:
        return None
    types = frozenset(t.strip() for value in values for t in value.split(",") if t.strip())
    for resource_type in types:
        check_type(resource_type)
    return types


async def _everything(request: web.Request, patient_id: str | None) -> web.Response:
    unknown = sorted(set(request.query) - _KNOWN)
    if unknown:
        raise BadRequest(
            f"$everything does not take {', '.join(unknown)}; it takes "
            "_count, _offset, _since and _type"
        )
    count = int_param(request, "_count", DEFAULT_PAGE, MAX_PAGE)
    offset = int_param(request, "_offset", 0)
    svc = services(request)
    page = await patient_everything(
        svc.fhir,
        svc.search.registry,
        principal(request).project,
        patient_id,
        types=_types(request),
        since=since_param(request),
        count=count,
        offset=offset,
    )
    query = SearchQuery(resource_type=None, count=count, offset=offset)
    result = SearchResult(query, page.resources, [], page.total)
    path = f"/Patient/{patient_id}/$everything" if patient_id else "/Patient/$everything"
    pairs = list(request.query.items())
    return fhir_response(searchset(base_url(request), path, pairs, result))


async def everything_instance(request: web.Request) -> web.Response:
    """``GET Patient/{id}/$everything``: one patient's record."""
    return await _everything(request, request.match_info["id"])


async def everything_type(request: web.Request) -> web.Response:
    """``GET Patient/$everything``: the records of every patient of the project."""
    return await _everything(request, None)
