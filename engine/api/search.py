"""Search over HTTP: GET ``/{type}``, POST ``/{type}/_search``, and the same at system level.

Results are ``searchset`` Bundles with ``self``/``next``/``previous`` links (``_count`` and
``_offset`` paging over a stable order), ``search.mode`` ``match``/``include``/``outcome``.
"""

from __future__ import annotations

from aiohttp import web

from fhirbots.engine.errors import UnsupportedMediaType
from fhirbots.engine.fhir.searchset import searchset
from fhirbots.engine.fhir.service import check_type
from fhirbots.engine.fhir.typed_search import requested_types, search_types
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.web.context import principal, services
from fhirbots.engine.web.http import base_url, fhir_response, prefer

__all__ = ["routes"]


async def _pairs(request: web.Request) -> list[tuple[str, str]]:
    pairs = list(request.query.items())
    if request.method == "POST":
        if request.content_type not in ("application/x-www-form-urlencoded", ""):
            raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded")
        form = await request.post()
        pairs += [(k, str(v)) for k, v in form.items()]
    return _total_method(pairs)


def _total_method(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Aidbox's ``_totalMethod`` (which fhirpy's ``count()`` sends) read as ``_total``:
    ``count`` is ``accurate``; an explicit ``_total`` wins."""
    methods = [v for k, v in pairs if k == "_totalMethod"]
    kept = [(k, v) for k, v in pairs if k != "_totalMethod"]
    if methods and not any(k == "_total" for k, _ in kept):
        kept.append(("_total", {"count": "accurate"}.get(methods[-1], methods[-1])))
    return kept


async def _search(request: web.Request, resource_type: str | None) -> web.Response:
    if resource_type is not None:
        check_type(resource_type)
    svc = services(request)
    pairs = await _pairs(request)
    lenient = prefer(request, "handling", "strict") == "lenient"
    types = requested_types(pairs) if resource_type is None else []
    if types:
        result = await search_types(
            svc.search, principal(request).project, types, pairs, lenient=lenient
        )
    else:
        result = await svc.search.search(
            principal(request).project, resource_type, pairs, lenient=lenient
        )
    path = f"/{resource_type}" if resource_type else ""
    base = base_url(request)
    return fhir_response(searchset(base, path, pairs, result))


async def search_type(request: web.Request) -> web.Response:
    """Search one type (GET, or POST ``_search`` with a form body)."""
    return await _search(request, request.match_info["type"])


async def search_system(request: web.Request) -> web.Response:
    """Search every type (``_type`` narrows it)."""
    return await _search(request, None)


def routes() -> list[web.RouteDef]:
    """Search routes; they go before the instance routes (``_search`` is not an id)."""
    base = API_PATH
    return [
        web.get(base, search_system),
        web.get(f"{base}/", search_system),
        web.get(f"{base}/_search", search_system),
        web.post(f"{base}/_search", search_system),
        web.get(f"{base}/{{type}}", search_type),
        web.post(f"{base}/{{type}}/_search", search_type),
    ]
