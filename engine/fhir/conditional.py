"""Conditional update, delete and patch: ``PUT``, ``DELETE`` and ``PATCH`` on ``Type?search``.

What the search finds decides the interaction (FHIR R4 3.1.0.4.3 and 3.1.0.7.1):

- update: no match creates (under the body's id when it has one, as update-as-create), one
  match is updated (a body id naming another resource is a 400), several are a 412;
- delete: no match changes nothing (204), one is deleted, several are a 412 unless deleting
  several is allowed (``FHIRBOTS_CONDITIONAL_DELETE_MULTIPLE``), then all go in one commit;
- patch: no match is a 404, one is patched, several are a 412.

The search runs in the caller's project only. Each interaction holds the storage's lock of the
type (:meth:`~fhirbots.engine.storage.port.Storage.exclusive`) from its search to its commit,
as a conditional create does, so two of them at once never both find nothing and both create.
"""

from __future__ import annotations

from typing import Any

from fhirbots.engine.errors import BadRequest, NotFound, PreconditionFailed
from fhirbots.engine.fhir.service import FhirService, check_type
from fhirbots.engine.storage.model import DeleteOp, StoredResource, WriteContext, WriteResult
from fhirbots.engine.storage.planner import new_id

__all__ = [
    "conditional_delete",
    "conditional_patch",
    "conditional_update",
    "delete_targets",
    "single_match",
    "update_target",
]


def single_match(found: list[StoredResource], what: str, search: str) -> StoredResource | None:
    """The one match, or None; 412 when the search found several."""
    if len(found) > 1:
        raise PreconditionFailed(
            f"conditional {what} {search!r} matches {len(found)} resources; it must match "
            "at most one"
        )
    return found[0] if found else None


def _require_search(search: str) -> str:
    if not search.split("?", 1)[-1].strip("&"):
        raise BadRequest("a conditional interaction needs search parameters after '?'")
    return search


async def update_target(
    service: FhirService, project: str, resource_type: str, search: str, resource: Any
) -> tuple[str, bool]:
    """The id a conditional update writes and whether it names an existing match.

    Call it holding the type's lock (a transaction holds it for all its entries)."""
    found = single_match(
        await service.find(project, resource_type, _require_search(search)), "update", search
    )
    body_id = resource.get("id") if isinstance(resource, dict) else None
    if found is None:
        return (str(body_id) if body_id else new_id()), False
    if body_id is not None and body_id != found.id:
        raise BadRequest(
            f"the body's id {body_id!r} is not the id of the resource the search found "
            f"({resource_type}/{found.id})"
        )
    return found.id, True


async def delete_targets(
    service: FhirService, project: str, resource_type: str, search: str, *, multiple: bool
) -> list[StoredResource]:
    """The resources a conditional delete deletes (412 when several and not ``multiple``).

    Call it holding the type's lock."""
    found = await service.find(project, resource_type, _require_search(search))
    if not multiple:
        single_match(found, "delete", search)
    return found


async def conditional_update(
    service: FhirService,
    project: str,
    resource_type: str,
    search: str,
    resource: Any,
    context: WriteContext,
    *,
    if_match: int | None = None,
) -> WriteResult:
    """``PUT Type?search``: see the module's summary for what each result does."""
    check_type(resource_type)
    async with service.storage.exclusive(project, resource_type):
        target, _ = await update_target(service, project, resource_type, search, resource)
        return await service.update(
            project, resource_type, target, resource, context, if_match=if_match
        )


async def conditional_delete(
    service: FhirService,
    project: str,
    resource_type: str,
    search: str,
    context: WriteContext,
    *,
    multiple: bool = False,
) -> list[WriteResult]:
    """``DELETE Type?search``: the results of the deletions, in one commit (none if nothing
    matched)."""
    check_type(resource_type)
    async with service.storage.exclusive(project, resource_type):
        found = await delete_targets(service, project, resource_type, search, multiple=multiple)
        if not found:
            return []
        ops = await service.prepare_many(
            project, [DeleteOp(resource_type, stored.id) for stored in found]
        )
        return await service.write(project, ops, context)


async def conditional_patch(
    service: FhirService,
    project: str,
    resource_type: str,
    search: str,
    patch: Any,
    context: WriteContext,
    *,
    media_type: str,
    if_match: int | None = None,
) -> WriteResult:
    """``PATCH Type?search``: 404 without a match, 412 with several."""
    check_type(resource_type)
    async with service.storage.exclusive(project, resource_type):
        found = single_match(
            await service.find(project, resource_type, _require_search(search)), "patch", search
        )
        if found is None:
            raise NotFound(f"conditional patch {search!r} matches no {resource_type}")
        return await service.patch(
            project,
            resource_type,
            found.id,
            patch,
            context,
            if_match=if_match,
            media_type=media_type,
        )
