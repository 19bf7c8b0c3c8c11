"""FHIR interactions on the datastore, independent of HTTP.

The REST API, transaction Bundles and (later) bots' API calls all go through
:class:`FhirService`, so validation, version checks and change events happen the same way
whatever the caller.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from fhirbots.engine.errors import (
    BadRequest,
    FhirError,
    Gone,
    Issue,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from fhirbots.engine.fhir.integrity import IntegrityPolicy, cascade_closure, check_writes
from fhirbots.engine.fhir.limits import RequestLimits
from fhirbots.engine.fhir.metrics import WRITES
from fhirbots.engine.fhir.patch import JSON_PATCH, apply_json_patch, apply_patch
from fhirbots.engine.fhir.validator_pool import BulkValidator
from fhirbots.engine.storage.model import (
    CreateOp,
    DeleteOp,
    HistoryPage,
    StoredResource,
    UpdateOp,
    WriteContext,
    WriteOp,
    WriteResult,
)
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.validation import ValidationProblem, is_known_type

__all__ = [
    "ConditionalSearch",
    "FhirService",
    "WriteCheck",
    "apply_json_patch",
    "check_id",
    "check_type",
]

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
"""FHIR R4 id: 1 to 64 of letters, digits, '-' and '.'."""

ConditionalSearch = Callable[[str, str, str], Awaitable[list[StoredResource]]]
"""``(project, type, query string) -> matches``; used by conditional create."""

WriteCheck = Callable[[str, dict[str, Any]], Awaitable[None]]
"""``(project, resource)``: raises a FhirError (e.g. 422) to refuse a resource before it is
written; registered per type with :meth:`FhirService.add_write_check`."""


def check_type(resource_type: str) -> None:
    """404 unless ``resource_type`` is a resource type this server stores."""
    if not is_known_type(resource_type):
        raise NotFound(f"unknown resource type {resource_type!r}")


def check_id(resource_id: str) -> None:
    """400 unless ``resource_id`` is a valid FHIR id."""
    if not ID_PATTERN.match(resource_id):
        raise BadRequest(f"invalid resource id {resource_id!r}")


def _invalid(problems: Sequence[ValidationProblem]) -> Unprocessable:
    issues = tuple(
        Issue(f"{p.path}: {p.message}", code=p.code, expression=(p.path,)) for p in problems
    )
    return Unprocessable("; ".join(i.diagnostics for i in issues), issues=issues)


HEAVY_VALIDATION_BYTES = 256 * 1024
"""Resources larger than this together are validated by the validator's worker processes,
off the event loop (validating a 4 MB resource of small elements takes seconds)."""


class FhirService:
    """Create, read, update, patch, delete and history, scoped to one project per call."""

    def __init__(
        self,
        storage: Storage,
        *,
        on_commit: Callable[[], None] | None = None,
        conditional_search: ConditionalSearch | None = None,
        validator: BulkValidator | None = None,
        limits: RequestLimits | None = None,
        integrity: IntegrityPolicy | None = None,
    ) -> None:
        self.storage = storage
        self.integrity = integrity or IntegrityPolicy()
        """Referential integrity on write and delete (:mod:`fhirbots.engine.fhir.integrity`)."""
        self.limits = limits or RequestLimits()
        """The bounds every request is held to (:mod:`fhirbots.engine.fhir.limits`)."""
        self._on_commit = on_commit
        self._conditional_search = conditional_search
        self._checks: dict[str, list[WriteCheck]] = {}
        self._validator = validator or BulkValidator(processes=1)

    def set_conditional_search(self, search: ConditionalSearch) -> None:
        """Enable ``If-None-Exist`` with the search implementation."""
        self._conditional_search = search

    async def write(
        self, project: str, ops: Sequence[WriteOp], context: WriteContext
    ) -> list[WriteResult]:
        """Apply already validated operations atomically."""
        results = await self.storage.apply(project, ops, context)
        for result in results:
            if result.event is not None:
                WRITES.labels(result.event.interaction, result.event.resource_type).inc()
        if self._on_commit is not None and any(r.event is not None for r in results):
            self._on_commit()
        return results

    def add_write_check(self, resource_type: str, check: WriteCheck) -> None:
        """Run ``check`` on every resource of ``resource_type`` before it is written.

        Checks go beyond the structure the models validate, e.g. a Subscription's criteria
        must be ones the engine can evaluate; a check refuses by raising a :class:`FhirError`.
        """
        self._checks.setdefault(resource_type, []).append(check)

    def write_checks(self, resource_type: str) -> tuple[WriteCheck, ...]:
        """The checks :meth:`add_write_check` registered for ``resource_type`` (``$validate``
        runs them without writing)."""
        return tuple(self._checks.get(resource_type, ()))

    async def prepare(self, project: str, op: WriteOp) -> WriteOp:
        """Validate the resource an operation writes (422 naming the element if invalid)."""
        return (await self.prepare_many(project, [op]))[0]

    async def prepare_many(
        self, project: str, ops: Sequence[WriteOp], where: Sequence[str] | None = None
    ) -> list[WriteOp]:
        """Validate many operations (large batches in the validator's worker processes).

        Args:
            project: the project written to.
            ops: the operations.
            where: a label per operation (``Bundle.entry[3]``) put before its errors.

        Raises:
            FhirError: for the first operation that is refused (nothing is written).
        """
        items = [
            (op.resource, op.resource_type if isinstance(op, UpdateOp) else None)
            for op in ops
            if not isinstance(op, DeleteOp)
        ]
        written = [i for i, op in enumerate(ops) if not isinstance(op, DeleteOp)]
        size = self.limits.check_resources(
            [resource for resource, _ in items],
            None if where is None else [where[i] for i in written],
        )
        heavy = size > HEAVY_VALIDATION_BYTES
        problems = iter(await self._validator.validate_many(items, heavy=heavy))
        prepared: list[WriteOp] = []
        for i, op in enumerate(ops):
            try:
                found = () if isinstance(op, DeleteOp) else next(problems)
                prepared.append(await self._prepare_one(project, op, found))
            except FhirError as exc:
                if where is not None:
                    exc.located(where[i])
                raise
        await check_writes(self.storage, project, prepared, self.integrity, where)
        return prepared

    async def _prepare_one(
        self, project: str, op: WriteOp, problems: tuple[ValidationProblem, ...]
    ) -> WriteOp:
        if isinstance(op, DeleteOp):
            check_type(op.resource_type)
            check_id(op.id)
            return op
        if problems:
            raise _invalid(problems)
        resource = op.resource
        if isinstance(op, CreateOp):
            check_type(resource["resourceType"])
            prepared: WriteOp = CreateOp({k: v for k, v in resource.items() if k != "id"}, op.id)
        else:
            check_type(op.resource_type)
            check_id(op.id)
            body_id = resource.get("id")
            if body_id is not None and body_id != op.id:
                raise BadRequest(f"the body's id {body_id!r} does not match the URL's {op.id!r}")
            prepared = op
        for check in self._checks.get(resource["resourceType"], ()):
            await check(project, resource)
        return prepared

    async def find(self, project: str, resource_type: str, search: str) -> list[StoredResource]:
        """Every live resource of ``resource_type`` matching ``search`` (a query string, with or
        without ``Type?``), for conditional interactions."""
        if self._conditional_search is None:
            raise BadRequest("conditional interactions need search, not enabled")
        check_type(resource_type)
        return await self._conditional_search(project, resource_type, search.split("?", 1)[-1])

    async def find_existing(
        self, project: str, resource_type: str, if_none_exist: str
    ) -> StoredResource | None:
        """The resource a conditional create finds (412 if several, as R4 says), or None."""
        found = await self.find(project, resource_type, if_none_exist)
        if len(found) > 1:
            raise PreconditionFailed(
                f"If-None-Exist {if_none_exist!r} matches {len(found)} resources"
            )
        return found[0] if found else None

    async def create(
        self,
        project: str,
        resource: Any,
        context: WriteContext,
        *,
        if_none_exist: str | None = None,
    ) -> WriteResult:
        """Create under a server-assigned id; with ``if_none_exist``, return the match instead."""
        op = await self.prepare(project, CreateOp(resource))
        assert isinstance(op, CreateOp)
        if if_none_exist:
            resource_type = op.resource["resourceType"]
            # Held from the search to the commit: two identical requests create one resource.
            async with self.storage.exclusive(project, resource_type):
                existing = await self.find_existing(project, resource_type, if_none_exist)
                if existing is not None:
                    return WriteResult(stored=existing, event=None, created=False)
                return (await self.write(project, [op], context))[0]
        return (await self.write(project, [op], context))[0]

    async def update(
        self,
        project: str,
        resource_type: str,
        resource_id: str,
        resource: Any,
        context: WriteContext,
        *,
        if_match: int | None = None,
    ) -> WriteResult:
        """Update, or create with the client's id when it does not exist."""
        op = await self.prepare(project, UpdateOp(resource_type, resource_id, resource, if_match))
        return (await self.write(project, [op], context))[0]

    async def patch(
        self,
        project: str,
        resource_type: str,
        resource_id: str,
        patch: Any,
        context: WriteContext,
        *,
        if_match: int | None = None,
        media_type: str = JSON_PATCH,
    ) -> WriteResult:
        """Apply a patch (of ``media_type``: see :mod:`~fhirbots.engine.fhir.patch`) to the
        current version (checked against it, atomically)."""
        current = await self.read(project, resource_type, resource_id)
        if if_match is not None and if_match != current.version_id:
            raise PreconditionFailed(
                f"{resource_type}/{resource_id}: If-Match names version {if_match}, "
                f"the current version is {current.version_id}"
            )
        patched = apply_patch(current, patch, media_type)
        return await self.update(
            project,
            resource_type,
            resource_id,
            patched,
            context,
            if_match=current.version_id,
        )

    async def delete(
        self,
        project: str,
        resource_type: str,
        resource_id: str,
        context: WriteContext,
        *,
        if_match: int | None = None,
        cascade: bool = False,
    ) -> WriteResult:
        """Delete (a tombstone version); deleting what is absent changes nothing.

        A resource others reference is refused with 409 (:mod:`fhirbots.engine.fhir.integrity`);
        with ``cascade``, they are deleted too, in the same transaction.
        """
        ops = [DeleteOp(resource_type, resource_id, if_match)]
        if cascade:
            check_type(resource_type)
            check_id(resource_id)
            closure = await cascade_closure(
                self.storage, project, (resource_type, resource_id), self.integrity
            )
            ops.extend(DeleteOp(t, i) for t, i in closure[1:])
        prepared = await self.prepare_many(project, ops)
        return (await self.write(project, prepared, context))[0]

    async def read(self, project: str, resource_type: str, resource_id: str) -> StoredResource:
        """The current version: 404 if it never existed, 410 if deleted."""
        check_type(resource_type)
        stored = await self.storage.read(project, resource_type, resource_id)
        if stored is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if stored.deleted:
            raise Gone(f"{resource_type}/{resource_id} was deleted")
        return stored

    async def vread(
        self, project: str, resource_type: str, resource_id: str, version_id: str
    ) -> StoredResource:
        """One version: 404 if absent, 410 if that version is a deletion."""
        check_type(resource_type)
        if not version_id.isdigit():
            raise NotFound(f"{resource_type}/{resource_id} has no version {version_id!r}")
        stored = await self.storage.vread(project, resource_type, resource_id, int(version_id))
        if stored is None:
            raise NotFound(f"{resource_type}/{resource_id} has no version {version_id}")
        if stored.deleted:
            raise Gone(f"version {version_id} of {resource_type}/{resource_id} is a deletion")
        return stored

    async def history(
        self,
        project: str,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since: datetime | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> HistoryPage:
        """History at system, type or instance level (404 for an unknown instance)."""
        if resource_type is not None:
            check_type(resource_type)
        page = await self.storage.history(
            project, resource_type, resource_id, since=since, count=count, offset=offset
        )
        if resource_id is not None and page.total == 0 and since is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        return page
