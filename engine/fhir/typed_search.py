"""System search narrowed by ``_type`` (``GET [base]?_type=Patient,Observation&...``): one
``searchset`` of several types.

Each type is searched with the same parameters (so they must be ones every listed type has,
such as ``_id`` or ``_lastUpdated``). The result is ordered by type, then as each type's search
orders it (``_sort``, then id), which lets ``_count``/``_offset`` page over the types without
holding more than a page: the matches of every type are counted first (the total is always
known), and each page reads only from the types it spans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from fhirbots.engine.fhir.search import DEFAULT_PAGE, MAX_PAGE, SearchResult, SearchService
from fhirbots.engine.fhir.service import check_type
from fhirbots.engine.storage.model import StoredResource

__all__ = ["requested_types", "search_types"]

_PAGING = frozenset({"_count", "_offset", "_summary", "_total", "_type"})


def requested_types(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """The types ``_type`` names (comma-separated, possibly repeated), sorted; 404 for an
    unknown one."""
    types = sorted({t.strip() for k, v in pairs if k == "_type" for t in v.split(",") if t.strip()})
    for resource_type in types:
        check_type(resource_type)
    return types


async def search_types(
    search: SearchService,
    project: str,
    types: Sequence[str],
    pairs: Sequence[tuple[str, str]],
    *,
    lenient: bool = False,
) -> SearchResult:
    """One page over the matches of every type in ``types`` (sorted), with the total."""
    without_types = [(k, v) for k, v in pairs if k != "_type"]
    query, _ = search.parse(types[0], without_types, lenient=lenient)
    count = min(query.count if query.count is not None else DEFAULT_PAGE, MAX_PAGE)
    query = replace(query, count=count)
    kept = [(k, v) for k, v in pairs if k not in _PAGING]
    counts: list[int] = []
    warnings: list[str] = []
    for resource_type in types:
        counted = await search.search(
            project, resource_type, [*kept, ("_summary", "count")], lenient=lenient
        )
        counts.append(counted.total or 0)
        warnings += [w for w in counted.warnings if w not in warnings]
    total = sum(counts)
    matches: list[StoredResource] = []
    included: dict[tuple[str, str], StoredResource] = {}
    if query.summary != "count":
        skip, remaining = query.offset, count
        for resource_type, matched in zip(types, counts, strict=True):
            if remaining <= 0:
                break
            if skip >= matched:
                skip -= matched
                continue
            paged = [*kept, ("_count", str(remaining)), ("_offset", str(skip))]
            page = await search.search(project, resource_type, paged, lenient=lenient)
            matches += page.matches
            included.update(((i.resource_type, i.id), i) for i in page.included)
            remaining -= len(page.matches)
            skip = 0
    return SearchResult(query, matches, list(included.values()), total, tuple(warnings))
