"""SearchParameter resources and ``$reindex``.

* Writing a SearchParameter checks it (:func:`fhirbots.subscriptions.search.stored.
  check_search_parameter`): an unsupported type, an unknown base, a bad expression, or a code
  that a built-in parameter or another SearchParameter of the project has for one of its bases
  is refused with 422 naming it.
* ``POST [base]/$reindex`` (body: nothing, or a ``Parameters`` with ``type`` parts) starts a job
  that recomputes the index rows of the caller's project's resources of those types (default: the
  bases of the project's active SearchParameters) and answers 202 with the job as a
  ``Parameters`` (``job``, ``status``, ``total``, ``done``) and its URL in ``Content-Location``.
* ``GET [base]/$reindex/<job>`` answers the job's progress.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fhirbots.engine.errors import BadRequest, Issue, NotFound, Unprocessable
from fhirbots.engine.fhir.reindex import Reindexer
from fhirbots.engine.fhir.service import FhirService, check_type
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.web.context import principal
from fhirbots.engine.web.http import base_url, fhir_response
from fhirbots.subscriptions.search.errors import InvalidDefinitionError
from fhirbots.subscriptions.search.stored import check_search_parameter

__all__ = ["REINDEX_JOB_PATH", "REINDEX_PATH", "install"]

REINDEX_PATH = f"{API_PATH}/$reindex"
REINDEX_JOB_PATH = f"{API_PATH}/$reindex/{{job}}"


def _refuse(message: str) -> Unprocessable:
    return Unprocessable(message, issues=(Issue(message, code="invalid"),))


def _checks(fhir: FhirService) -> None:
    async def check(project: str, resource: dict[str, Any]) -> None:
        try:
            entry = check_search_parameter(resource)
        except InvalidDefinitionError as exc:
            raise _refuse(str(exc)) from exc
        for row in await fhir.storage.current_resources(project, "SearchParameter"):
            other = row.content or {}
            if row.id == resource.get("id") or other.get("code") != entry["code"]:
                continue
            shared = set(other.get("base") or []) & set(entry["base"])
            if shared:
                raise _refuse(
                    f"SearchParameter.code {entry['code']!r} is already defined for "
                    f"{', '.join(sorted(shared))} by SearchParameter/{row.id}"
                )

    fhir.add_write_check("SearchParameter", check)


async def _requested_types(request: web.Request, fhir: FhirService, project: str) -> list[str]:
    body: Any = None
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError as exc:
            raise BadRequest(f"$reindex: the body is not JSON: {exc}") from exc
    types: list[str] = list(request.query.getall("type", []))
    if body is not None:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise BadRequest("$reindex takes a Parameters resource (or no body)")
        for part in body.get("parameter") or []:
            if part.get("name") == "type":
                types.append(str(part.get("valueCode") or part.get("valueString") or ""))
    if not types:
        rows = await fhir.storage.current_resources(project, "SearchParameter")
        types = [
            t
            for r in rows
            if r.content and r.content.get("status") == "active"
            for t in r.content.get("base") or []
        ]
    if not types:
        types = sorted(await fhir.storage.count_by_type(project))
    for resource_type in types:
        check_type(resource_type)
    return types


def install(fhir: FhirService, reindexer: Reindexer, routes: list[web.RouteDef]) -> None:
    """Register the SearchParameter check on ``fhir`` and the ``$reindex`` routes."""
    _checks(fhir)

    async def start(request: web.Request) -> web.Response:
        project = principal(request).project
        job = await reindexer.start(project, await _requested_types(request, fhir, project))
        location = f"{base_url(request)}/$reindex/{job.id}"
        return fhir_response(
            job.to_parameters(), status=202, headers={"Content-Location": location}
        )

    async def status(request: web.Request) -> web.Response:
        job = reindexer.get(principal(request).project, request.match_info["job"])
        if job is None:
            raise NotFound(f"no reindex job {request.match_info['job']!r} in this project")
        return fhir_response(job.to_parameters())

    routes.append(web.post(REINDEX_PATH, start))
    routes.append(web.get(REINDEX_JOB_PATH, status))
