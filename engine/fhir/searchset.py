"""The ``searchset`` Bundle of a search result, for the REST API and the bots' gateway alike.

Links (``self``, ``next``, ``previous``) repeat the request's parameters with ``_count`` and
``_offset`` paging; entries carry ``search.mode`` ``match``, ``include`` or ``outcome``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fhirbots.engine.errors import Issue
from fhirbots.engine.fhir.outcome import operation_outcome
from fhirbots.engine.fhir.search import SearchResult, shape

__all__ = ["searchset"]

_PAGING = ("_count", "_offset")


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
    if result.truncated:  # the page stopped at the byte bound: go on from where it ended
        links.append(link("next", query.offset + len(result.matches)))
    elif (
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
