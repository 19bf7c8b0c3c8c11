"""Search over HTTP: GET ``/{type}``, POST ``/{type}/_search``, and the same at system level.

Results are ``searchset`` Bundles with ``self``/``next``/``previous`` links (``_count`` and
``_offset`` paging over a stable order), ``search.mode`` ``match``/``include``/``outcome``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from engine.api.context import principal, services
from engine.api.http import base_url, fhir_response, prefer
from engine.api.outcome import operation_outcome
from engine.errors import Issue, UnsupportedMediaType
from engine.search import SearchResult, shape
from engine.service import check_type

__all__ = ["routes", "searchset"]

_PAGING = ("_count", "_offset")


async def _pairs(request: web.Request) -> list[tuple[str, str]]:
    pairs = list(request.query.items())
    if request.method == "POST":
        if request.content_type not in ("application/x-www-form-urlencoded", ""):
            raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded")
        form = await request.post()
        pairs += [(k, str(v)) for k, v in form.items()]
    return pairs


def searchset(
    base: str, path: str, pairs: list[tuple[str, str]], result: SearchResult
) -> dict[str, Any]:
    """The ``searchset`` Bundle of a result; links repeat the request's parameters."""
    query = result.query
    count = query.count or 0
    kept = [(k, v) for k, v in pairs if k not in _PAGING]

    def link(relation: str, offset: int) -> dict[str, str]:
        params = urlencode([*kept, ("_count", str(count)), ("_offset", str(offset))])
        return {"relation": relation, "url": f"{base}{path}?{params}"}

    links = [link("self", query.offset)]
    if (
        count
        and len(result.matches) == count
        and (result.total is None or query.offset + count < result.total)
    ):
        links.append(link("next", query.offset + count))
    if query.offset > 0 and count:
        links.append(link("previous", max(0, query.offset - count)))
    entries: list[dict[str, Any]] = []
    for mode, group in (("match", result.matches), ("include", result.included)):
        for stored in group:
            assert stored.content is not None
            entries.append(
                {
                    "fullUrl": f"{base}/{stored.resource_type}/{stored.id}",
                    "resource": shape(stored.content, query) if mode == "match" else stored.content,
                    "search": {"mode": mode},
                }
            )
    if result.warnings:
        issues = [Issue(w, severity="warning", code="not-supported") for w in result.warnings]
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    bundle["entry"] = entries
    return bundle


async def _search(request: web.Request, resource_type: str | None) -> web.Response:
    if resource_type is not None:
        check_type(resource_type)
    svc = services(request)
    pairs = await _pairs(request)
    result = await svc.search.search(
        principal(request).project,
        resource_type,
        pairs,
        lenient=prefer(request, "handling", "strict") == "lenient",
    )
    path = f"/{resource_type}" if resource_type else ""
    base = base_url(request, svc.settings.public_url)
    return fhir_response(searchset(base, path, pairs, result))


async def search_type(request: web.Request) -> web.Response:
    """Search one type (GET, or POST ``_search`` with a form body)."""
    return await _search(request, request.match_info["type"])


async def search_system(request: web.Request) -> web.Response:
    """Search every type (``_type`` narrows it)."""
    return await _search(request, None)


def routes() -> list[web.RouteDef]:
    """Search routes; they go before the instance routes (``_search`` is not an id)."""
    base = "/fhir/R4"
    return [
        web.get(base, search_system),
        web.post(f"{base}/_search", search_system),
        web.get(f"{base}/{{type}}", search_type),
        web.post(f"{base}/{{type}}/_search", search_type),
    ]
