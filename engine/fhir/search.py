"""Search on the datastore: parse (``fhirbots.subscriptions.search``), have the storage run the
query (:meth:`fhirbots.engine.storage.port.Storage.search`), then add ``_include``/``_revinclude``
resources and shape the results (``_elements``, ``_summary``).

Used by the REST search API, conditional create, GET entries of Bundles and the bots' API;
every search is checked against the caller's scope (:mod:`fhirbots.engine.fhir.scopes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import orjson

from fhirbots.engine.errors import BadRequest, Unprocessable
from fhirbots.engine.fhir.definitions import SearchDefinitions
from fhirbots.engine.fhir.limits import ResponseTooLarge
from fhirbots.engine.fhir.scopes import check_search, visible
from fhirbots.engine.storage.model import SearchPage, StoredResource
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.validation import fhir_model
from fhirbots.subscriptions.search import (
    MissingTerminologyError,
    Registry,
    SearchError,
    SearchQuery,
    default_registry,
    parse_params,
    parse_search,
)
from fhirbots.subscriptions.search.project import ProjectSearch

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "SearchResult", "SearchService", "shape"]

DEFAULT_PAGE = 50
"""Page size when ``_count`` is not given."""

MAX_PAGE = 1000
"""Largest page a client may ask for."""

MAX_INCLUDE_DEPTH = 4
"""How many rounds ``:iterate`` includes follow; stops reference cycles from looping."""

_MANDATORY = ("resourceType", "id", "meta")

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
"""The tag a resource carries when ``_elements`` or ``_summary`` left parts of it out."""


@dataclass(frozen=True)
class SearchResult:
    """A page of matches, the resources included with them, and the total when known."""

    query: SearchQuery
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int | None
    warnings: tuple[str, ...] = ()
    truncated: bool = False
    """The page stopped at the byte bound before ``_count``; more matches may follow."""


@cache
def _summary_fields(resource_type: str) -> frozenset[str]:
    model = fhir_model(resource_type)
    if model is None:
        return frozenset()
    return frozenset(
        field.alias or name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict)
        and field.json_schema_extra.get("summary_element_property")
    )


def _subsetted(content: dict[str, Any], keep: Iterable[str]) -> dict[str, Any]:
    wanted = set(keep) | set(_MANDATORY)
    out = {k: v for k, v in content.items() if k in wanted}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out


def shape(content: dict[str, Any], query: SearchQuery) -> dict[str, Any]:
    """Apply ``_elements`` and ``_summary`` to one matched resource."""
    if query.elements:
        return _subsetted(content, query.elements)
    summary = query.summary
    if summary in (None, "false"):
        return content
    if summary == "text":
        return _subsetted(content, ("text",))
    if summary == "data":
        return _subsetted(content, (k for k in content if k != "text"))
    if summary == "true":
        return _subsetted(content, _summary_fields(str(content.get("resourceType"))))
    raise BadRequest(f"_summary={summary} is not supported (true, false, text, data, count)")


class SearchService:
    """Runs searches for one storage."""

    def __init__(
        self,
        storage: Storage,
        *,
        registry: Registry | None = None,
        max_page_bytes: int | None = None,
    ) -> None:
        self._storage = storage
        self._max_page_bytes = max_page_bytes
        self._registry = registry or default_registry()
        self._definitions = SearchDefinitions(storage)

    @property
    def registry(self) -> Registry:
        """The search parameter definitions in use."""
        return self._registry

    def parse(
        self,
        resource_type: str | None,
        pairs: Sequence[tuple[str, str]],
        *,
        lenient: bool = False,
        definitions: ProjectSearch | None = None,
    ) -> tuple[SearchQuery, tuple[str, ...]]:
        """Parse request parameters; a bad one is a 400 naming it (dropped when lenient), a
        ValueSet or CodeSystem that is not stored a 422 naming it."""
        try:
            parsed = parse_params(
                resource_type,
                pairs,
                registry=definitions.registry if definitions else self._registry,
                terminology=definitions.terminology if definitions else None,
                lenient=lenient,
            )
        except MissingTerminologyError as exc:
            raise Unprocessable(str(exc)) from exc
        except SearchError as exc:
            raise BadRequest(str(exc)) from exc
        return parsed.query, parsed.warnings

    async def definitions(self, project: str, names: Sequence[str]) -> ProjectSearch:
        """The project's SearchParameters (and terminology, if ``names`` need it)."""
        return await self._definitions.load(project, names)

    async def search(
        self,
        project: str,
        resource_type: str | None,
        pairs: Sequence[tuple[str, str]],
        *,
        lenient: bool = False,
    ) -> SearchResult:
        """Run a search; the page is ``_count`` (default :data:`DEFAULT_PAGE`) from ``_offset``."""
        definitions = await self.definitions(project, [name for name, _ in pairs])
        query, warnings = self.parse(resource_type, pairs, lenient=lenient, definitions=definitions)
        check_search(
            query, definitions.registry
        )  # the caller's scope (fhirbots.engine.fhir.scopes)
        count = min(query.count if query.count is not None else DEFAULT_PAGE, MAX_PAGE)
        query = _with_count(query, count)
        total: int | None = None
        # The total costs a count of every match: always for _summary=count and _count=0,
        # on request for _total=accurate; _total=estimate and none take only the free one.
        if query.summary == "count" or count == 0 or query.total == "accurate":
            total = await self._count(query, project)
        if query.summary == "count" or count == 0:
            return SearchResult(query, [], [], total, warnings)
        matches = await self._run(query, project)
        truncated = isinstance(matches, SearchPage) and matches.truncated
        last = len(matches) < count and not truncated
        if total is None and (query.offset == 0 or matches) and last:
            total = query.offset + len(matches)  # the last page tells the total for free
        included = visible(await self._includes(project, query, matches))
        return SearchResult(query, matches, included, total, warnings, truncated)

    async def find(self, project: str, resource_type: str, search: str) -> list[StoredResource]:
        """Every match of a query string (for conditional interactions)."""
        names = [item.partition("=")[0] for item in search.split("?", 1)[-1].split("&")]
        definitions = await self.definitions(project, names)
        try:
            query = parse_search(
                search,
                resource_type=resource_type,
                registry=definitions.registry,
                terminology=definitions.terminology,
            ).query
        except MissingTerminologyError as exc:
            raise Unprocessable(str(exc)) from exc
        except SearchError as exc:
            raise BadRequest(str(exc)) from exc
        check_search(query, definitions.registry)
        return await self._run(_with_count(query, None), project)

    async def _run(self, query: SearchQuery, project: str) -> list[StoredResource]:
        try:
            return await self._storage.search(project, query, max_bytes=self._max_page_bytes)
        except SearchError as exc:
            raise BadRequest(str(exc)) from exc

    async def _count(self, query: SearchQuery, project: str) -> int:
        try:
            return await self._storage.search_count(project, query)
        except SearchError as exc:
            raise BadRequest(str(exc)) from exc

    async def _fetch(
        self, project: str, keys: set[tuple[str, str]], budget: _IncludeBudget
    ) -> list[StoredResource]:
        by_type: dict[str, list[str]] = {}
        for resource_type, resource_id in sorted(keys):
            by_type.setdefault(resource_type, []).append(resource_id)
        found: list[StoredResource] = []
        for resource_type, ids in by_type.items():
            for start in range(0, len(ids), _INCLUDE_CHUNK):
                chunk = ids[start : start + _INCLUDE_CHUNK]
                fetched = await self._storage.current_by_ids(project, resource_type, chunk)
                budget.spend(fetched)
                found += fetched
        return found

    def _params_of(self, source_type: str, param: str) -> list[str]:
        if param != "*":
            definition = self._registry.get(source_type, param)
            if definition is None or definition.type != "reference":
                raise BadRequest(f"{source_type}:{param} is not a reference search parameter")
            return [param]
        codes = (self._registry.get(source_type, c) for c in self._registry.codes(source_type))
        return [d.code for d in codes if d is not None and d.type == "reference"]

    async def _includes(
        self, project: str, query: SearchQuery, matches: list[StoredResource]
    ) -> list[StoredResource]:
        budget = _IncludeBudget(self._max_page_bytes, matches)
        seen = {(m.resource_type, m.id) for m in matches}
        included: list[StoredResource] = []
        frontier = list(matches)
        for depth in range(MAX_INCLUDE_DEPTH):
            keys: set[tuple[str, str]] = set()
            for spec in query.include:
                source_type, param, target, iterate = _spec(spec)
                if depth > 0 and not iterate:
                    continue
                ids = [m.id for m in frontier if m.resource_type == source_type]
                codes = self._params_of(source_type, param)
                targets = await self._storage.include_targets(project, source_type, codes, ids)
                keys |= {t for t in targets if target is None or t[0] == target}
            for spec in query.revinclude:
                source_type, param, _, iterate = _spec(spec)
                if depth > 0 and not iterate:
                    continue
                codes = self._params_of(source_type, param)
                frontier_keys = [(f.resource_type, f.id) for f in frontier]
                keys |= await self._storage.revinclude_sources(
                    project, source_type, codes, frontier_keys
                )
            fetched = await self._fetch(project, keys - seen, budget)
            if not fetched:
                break
            seen |= {(f.resource_type, f.id) for f in fetched}
            included += fetched
            frontier = fetched
        return included


_INCLUDE_CHUNK = 50
"""Included resources read at a time, so a bound is noticed before much is held."""


class _IncludeBudget:
    """The bytes a page's included resources may take: what the page's matches left of the
    response bound (unbounded without one)."""

    def __init__(self, max_bytes: int | None, matches: list[StoredResource]) -> None:
        self._max = max_bytes
        used = matches.size if isinstance(matches, SearchPage) else 0
        self._left = None if max_bytes is None else max_bytes - used

    def spend(self, fetched: list[StoredResource]) -> None:
        if self._left is None:
            return
        self._left -= sum(len(orjson.dumps(r.content)) for r in fetched)
        if self._left < 0:
            raise ResponseTooLarge(
                f"this page with its _include and _revinclude resources is larger than "
                f"{self._max} bytes (FHIRBOTS_MAX_RESPONSE_BYTES); ask for a smaller _count "
                "or fewer inclusions"
            )


def _spec(spec: str) -> tuple[str, str, str | None, bool]:
    iterate = spec.endswith(":iterate")
    parts = spec.removesuffix(":iterate").split(":")
    if len(parts) not in (2, 3):
        raise BadRequest(f"_include/_revinclude {spec!r} must be Type:param[:target]")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None, iterate


def _with_count(query: SearchQuery, count: int | None) -> SearchQuery:
    return replace(query, count=count)
