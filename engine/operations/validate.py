"""``$validate``: would this resource be accepted? Every problem found, nothing written.

OperationDefinition (the standard ``Resource-validate``,
``http://hl7.org/fhir/OperationDefinition/Resource-validate``):

* name ``validate``, code ``validate``, kind operation, resource ``Resource`` (every type),
  ``system`` false, ``type`` true (``POST [base]/[type]/$validate``), ``instance`` true
  (``POST [base]/[type]/[id]/$validate``), not affecting state.
* in ``resource`` (0..1, Resource): the resource to check; the body may also be the resource
  itself instead of a ``Parameters``. Not needed for ``mode=delete`` at instance level.
* in ``mode`` (0..1, code: ``create`` | ``update`` | ``delete``): what the resource is checked
  for; also accepted as the query parameter ``mode``. Without it, as for ``create``.
* in ``profile`` (0..1, uri): not supported (a ``profile`` part is answered with a warning).
* out ``return`` (1..1, OperationOutcome): one issue per problem found, 200 either way (as R4
  says, the status does not tell whether the resource is valid); an ``information`` issue when
  there is none. 4xx only when the request itself is malformed.

What is checked, all of it, not only the first problem: the structure (R4B models), codes
against required bindings, the engine's own checks of a type (Subscription criteria, Bot
source...), references to local resources that do not exist (when referential integrity on
write is on), and for ``update`` that the ids agree; for ``delete``, that the resource exists
and which resources referencing it would block the delete (when the check on delete is on).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fhirbots.engine.errors import BadRequest, FhirError, Issue
from fhirbots.engine.fhir.integrity import blocked_issue, delete_blockers, unresolved_references
from fhirbots.engine.fhir.outcome import operation_outcome
from fhirbots.engine.fhir.service import FhirService, check_id, check_type
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.web.context import principal, services
from fhirbots.engine.web.http import fhir_response, read_json
from fhirbots.schemas.validation import ResourceInvalid, validate_resource

__all__ = ["MODES", "VALIDATE_INSTANCE_PATH", "VALIDATE_TYPE_PATH", "install", "validation_issues"]

VALIDATE_TYPE_PATH = f"{API_PATH}/{{type}}/$validate"
VALIDATE_INSTANCE_PATH = f"{API_PATH}/{{type}}/{{id}}/$validate"

MODES = ("create", "update", "delete")
"""The ``mode`` values (R4 value set ``resource-validation-mode``, less ``profile``)."""

MAX_BLOCKERS = 20
"""Referrers listed for ``mode=delete`` at most (one blocks the delete already)."""


def _parameters(body: Any) -> tuple[dict[str, Any] | None, str | None, bool]:
    """``(resource, mode, profile given)`` of a request body: a resource or a Parameters."""
    if body is None:
        return None, None, False
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise BadRequest("$validate takes a resource or a Parameters resource")
    if body["resourceType"] != "Parameters":
        return body, None, False
    resource: dict[str, Any] | None = None
    mode: str | None = None
    profile = False
    for part in body.get("parameter") or []:
        if not isinstance(part, dict):
            continue
        name = part.get("name")
        if name == "resource":
            resource = part.get("resource")
            if not isinstance(resource, dict):
                raise BadRequest("$validate: the resource parameter holds no resource")
        elif name == "mode":
            mode = part.get("valueCode") or part.get("valueString")
        elif name == "profile":
            profile = True
    return resource, mode, profile


async def validation_issues(
    fhir: FhirService,
    project: str,
    resource_type: str,
    resource_id: str | None,
    resource: dict[str, Any] | None,
    mode: str,
) -> list[Issue]:
    """Every problem a ``mode`` write of ``resource`` (or a delete of ``resource_id``) would
    meet in ``project``; empty when it would be accepted.

    Raises:
        BadRequest: the request lacks what ``mode`` needs (a resource, an id).
    """
    if mode == "delete":
        return await _delete_issues(fhir, project, resource_type, resource_id, resource)
    if resource is None:
        raise BadRequest(f"$validate mode {mode} needs a resource")
    issues: list[Issue] = []
    if resource.get("resourceType") != resource_type:
        issues.append(
            Issue(
                f"the resource is a {resource.get('resourceType')!r}, the URL names"
                f" {resource_type}",
                code="invalid",
                expression=("resourceType",),
            )
        )
        return issues
    if mode == "update":
        body_id = resource.get("id")
        if resource_id is None and body_id is None:
            issues.append(
                Issue("an update needs an id, in the URL or the resource", code="required")
            )
        elif resource_id is not None and body_id is not None and body_id != resource_id:
            issues.append(
                Issue(
                    f"the body's id {body_id!r} does not match the URL's {resource_id!r}",
                    code="invalid",
                    expression=(f"{resource_type}.id",),
                )
            )
    try:
        validate_resource(resource, expected_type=resource_type)
    except ResourceInvalid as exc:
        issues.extend(
            Issue(f"{p.path}: {p.message}", code=p.code, expression=(p.path,)) for p in exc.problems
        )
    else:
        # The engine's own checks of a type expect a resource its model accepts.
        for check in fhir.write_checks(resource_type):
            try:
                await check(project, resource)
            except FhirError as exc:
                issues.extend(exc.issues)
    if fhir.integrity.on_write:
        key = resource_id or resource.get("id")
        written = {(resource_type, str(key))} if mode == "update" and key else set()
        [unresolved] = await unresolved_references(
            fhir.storage, project, [resource], fhir.integrity, written=written
        )
        issues.extend(unresolved)
    return issues


async def _delete_issues(
    fhir: FhirService,
    project: str,
    resource_type: str,
    resource_id: str | None,
    resource: dict[str, Any] | None,
) -> list[Issue]:
    target_id = resource_id or (resource or {}).get("id")
    if not isinstance(target_id, str):
        raise BadRequest("$validate mode delete needs the id of the resource (in the URL)")
    check_id(target_id)
    target = (resource_type, target_id)
    if not await fhir.storage.existing(project, [target]):
        return [Issue(f"{resource_type}/{target_id} is not known", code="not-found")]
    if not fhir.integrity.on_delete:
        return []
    blockers = await delete_blockers(
        fhir.storage, project, [target], fhir.integrity, limit=MAX_BLOCKERS
    )
    return [blocked_issue(blocked, referrer) for blocked, referrer in blockers]


async def validate_handler(request: web.Request) -> web.Response:
    """``POST [base]/[type]/$validate`` and ``POST [base]/[type]/[id]/$validate``."""
    resource_type = request.match_info["type"]
    resource_id = request.match_info.get("id")
    check_type(resource_type)
    if resource_id is not None:
        check_id(resource_id)
    # A body may be absent (mode=delete at instance level); read() is cached, and a middleware
    # may have read it already, so ask for the bytes rather than whether it can be read.
    body = await read_json(request) if await request.read() else None
    resource, mode, profile = _parameters(body)
    mode = mode or request.query.get("mode") or "create"
    if mode not in MODES:
        raise BadRequest(f"$validate mode must be one of {', '.join(MODES)}, not {mode!r}")
    fhir = services(request).fhir
    issues = await validation_issues(
        fhir, principal(request).project, resource_type, resource_id, resource, mode
    )
    if profile:
        issues.append(
            Issue(
                "validation against a profile is not supported",
                code="not-supported",
                severity="warning",
            )
        )
    if not any(issue.severity in ("error", "fatal") for issue in issues):
        issues.append(
            Issue(f"no problems found ({mode})", code="informational", severity="information")
        )
    return fhir_response(operation_outcome(issues))


def install(routes: list[web.RouteDef]) -> None:
    """Append the ``$validate`` routes (type and instance level) to ``routes``."""
    routes.append(web.post(VALIDATE_TYPE_PATH, validate_handler))
    routes.append(web.post(VALIDATE_INSTANCE_PATH, validate_handler))
