"""Transaction and batch Bundles.

A transaction is atomic: every entry is validated first, ``urn:uuid:`` references are
rewritten to the ids the server assigns, and all writes go to the storage as one
:meth:`~fhirbots.engine.storage.port.Storage.apply`. Entries are processed in the order the
specification gives (DELETE, POST, PUT/PATCH, then GET); the response lists them in request
order. A batch runs each entry on its own and reports each entry's outcome.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from fhirbots.engine.errors import BadRequest, FhirError, NotFound
from fhirbots.engine.fhir.conditional import (
    conditional_delete,
    conditional_patch,
    conditional_update,
    delete_targets,
    single_match,
    update_target,
)
from fhirbots.engine.fhir.limits import ResponseBudget, ResponseTooLarge
from fhirbots.engine.fhir.outcome import outcome_for
from fhirbots.engine.fhir.patch import FHIRPATH_PATCH, JSON_PATCH, PATCH_MEDIA_TYPES, apply_patch
from fhirbots.engine.fhir.service import FhirService, check_type
from fhirbots.engine.storage.model import (
    CreateOp,
    DeleteOp,
    StoredResource,
    UpdateOp,
    WriteContext,
    WriteOp,
    WriteResult,
)
from fhirbots.engine.storage.planner import format_instant, new_id

__all__ = ["process_bundle"]

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
"""Processing order of a transaction's entries (FHIR R4 3.1.0.11.2)."""

_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}

GetHandler = Callable[[str, str], Any]


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    resource: Any
    if_match: int | None
    if_none_exist: str | None
    full_url: str | None


def _parse_etag(value: Any) -> int | None:
    if value is None:
        return None
    text = str(value).removeprefix("W/").strip('"')
    if not text.isdigit():
        raise BadRequest(f"invalid ifMatch {value!r}")
    return int(text)


def _entries(bundle: Any) -> tuple[str, list[_Entry]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("expected a Bundle")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise BadRequest(f"Bundle.type must be transaction or batch, not {kind!r}")
    parsed: list[_Entry] = []
    for i, entry in enumerate(bundle.get("entry") or []):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict) or not request.get("method") or not request.get("url"):
            raise BadRequest(f"Bundle.entry[{i}].request needs method and url")
        parsed.append(
            _Entry(
                index=i,
                method=str(request["method"]).upper(),
                url=str(request["url"]).lstrip("/"),
                resource=entry.get("resource"),
                if_match=_parse_etag(request.get("ifMatch")),
                if_none_exist=request.get("ifNoneExist"),
                full_url=entry.get("fullUrl"),
            )
        )
    return kind, parsed


def _split_url(entry: _Entry) -> tuple[str, str | None]:
    path = entry.url.split("?", 1)[0]
    parts = path.split("/")
    if len(parts) == 1:
        return parts[0], None
    if len(parts) == 2:
        return parts[0], parts[1]
    raise BadRequest(f"Bundle.entry[{entry.index}].request.url {entry.url!r} is not supported")


def _rewrite(value: Any, ids: dict[str, str], missing: list[str] | None = None) -> Any:
    """Point every ``reference`` naming a fullUrl of the Bundle at the id it was assigned;
    ``urn:uuid:`` references that name no fullUrl are added to ``missing``.

    In place: the entries are the request's own parsed JSON, and a copy of every resource of a
    large transaction was a third of the API's time for it."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                if item in ids:
                    value[key] = ids[item]
                elif missing is not None and item.startswith("urn:uuid:"):
                    missing.append(item)
            elif isinstance(item, (dict, list)):
                _rewrite(item, ids, missing)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                _rewrite(item, ids, missing)
    return value


def _check_distinct(entries: list[_Entry]) -> None:
    """400 for two entries of a transaction with one fullUrl, or writing one resource (which
    of them wins would depend on the processing order)."""
    full_urls: dict[str, int] = {}
    targets: dict[str, int] = {}
    for entry in entries:
        if entry.full_url:
            first = full_urls.setdefault(entry.full_url, entry.index)
            if first != entry.index:
                raise BadRequest(
                    f"Bundle.entry[{first}] and Bundle.entry[{entry.index}] have the same"
                    f" fullUrl {entry.full_url!r}"
                )
        if entry.method in ("PUT", "PATCH", "DELETE") and "?" not in entry.url:
            first = targets.setdefault(entry.url, entry.index)
            if first != entry.index:
                raise BadRequest(
                    f"Bundle.entry[{first}] and Bundle.entry[{entry.index}] both write {entry.url}"
                )


def _patch_document(entry: _Entry) -> tuple[Any, str]:
    """The patch of a PATCH entry and its media type: a ``Parameters`` resource (FHIRPath
    Patch), or a ``Binary`` holding a JSON Patch (or, by its ``contentType``, a merge patch)."""
    resource = entry.resource
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return resource, FHIRPATH_PATCH
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise BadRequest(
            f"Bundle.entry[{entry.index}]: PATCH needs a Parameters resource (FHIRPath Patch) "
            "or a Binary resource holding a JSON Patch"
        )
    media = resource.get("contentType")
    try:
        document = orjson.loads(base64.b64decode(resource.get("data") or ""))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise BadRequest(f"Bundle.entry[{entry.index}]: the JSON Patch is malformed") from exc
    return document, media if media in PATCH_MEDIA_TYPES else JSON_PATCH


def _conditional(entry: _Entry) -> bool:
    """Whether the entry's interaction depends on a search (and so holds its type's lock)."""
    if entry.method == "POST":
        return bool(entry.if_none_exist)
    return entry.method in ("PUT", "DELETE", "PATCH") and "?" in entry.url


def _response(
    result: WriteResult | StoredResource | None, status: int, *, representation: bool
) -> dict[str, Any]:
    stored = result.stored if isinstance(result, WriteResult) else result
    response: dict[str, Any] = {"status": _STATUS_TEXT.get(status, str(status))}
    entry: dict[str, Any] = {"response": response}
    if stored is not None and not stored.deleted:
        response["location"] = f"{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
        response["etag"] = f'W/"{stored.version_id}"'
        response["lastModified"] = format_instant(stored.last_updated)
        if representation:
            entry["resource"] = stored.content
    return entry


class _Transaction:
    def __init__(
        self,
        service: FhirService,
        project: str,
        context: WriteContext,
        entries: list[_Entry],
        multiple: bool = False,
    ) -> None:
        self.service = service
        self.project = project
        self.context = context
        self.entries = entries
        self.ids: dict[str, str] = {}
        self.existing: dict[int, StoredResource] = {}
        self.multiple = multiple
        self.unmatched: set[int] = set()
        """Conditional deletes that found nothing."""
        self.also_deleted: dict[int, list[str]] = {}
        """Further ids a conditional delete found (when deleting several is allowed)."""

    async def _resolve_conditional(self) -> None:
        """Turn each ``Type?search`` entry into ``Type/id`` (the caller holds the locks)."""
        for entry in self.entries:
            if entry.method not in ("PUT", "DELETE", "PATCH") or "?" not in entry.url:
                continue
            resource_type, search = entry.url.split("?", 1)
            try:
                check_type(resource_type)
                if entry.method == "PUT":
                    target, _ = await update_target(
                        self.service, self.project, resource_type, search, entry.resource
                    )
                    entry.url = f"{resource_type}/{target}"
                elif entry.method == "PATCH":
                    found = single_match(
                        await self.service.find(self.project, resource_type, search),
                        "patch",
                        search,
                    )
                    if found is None:
                        raise NotFound(f"conditional patch {search!r} matches no {resource_type}")
                    entry.url = f"{resource_type}/{found.id}"
                else:
                    found_all = await delete_targets(
                        self.service, self.project, resource_type, search, multiple=self.multiple
                    )
                    if not found_all:
                        self.unmatched.add(entry.index)
                        continue
                    entry.url = f"{resource_type}/{found_all[0].id}"
                    self.also_deleted[entry.index] = [f.id for f in found_all[1:]]
            except FhirError as exc:
                raise exc.located(f"Bundle.entry[{entry.index}]") from None

    async def _assign_ids(self) -> dict[int, str]:
        assigned: dict[int, str] = {}
        for entry in self.entries:
            if entry.method == "POST":
                resource_type, _ = _split_url(entry)
                found = None
                if entry.if_none_exist:
                    found = await self.service.find_existing(
                        self.project, resource_type, entry.if_none_exist
                    )
                if found is not None:
                    self.existing[entry.index] = found
                    resource_id = found.id
                else:
                    resource_id = new_id()
                assigned[entry.index] = resource_id
                if entry.full_url:
                    self.ids[entry.full_url] = f"{resource_type}/{resource_id}"
            elif entry.method == "PUT" and entry.full_url:
                put_type, put_id = _split_url(entry)
                if put_id is not None:
                    self.ids[entry.full_url] = f"{put_type}/{put_id}"
        return assigned

    async def _op(self, entry: _Entry, assigned: dict[int, str]) -> WriteOp:
        resource_type, resource_id = _split_url(entry)
        check_type(resource_type)
        if "?" in entry.url and entry.method != "GET":
            raise BadRequest(f"conditional {entry.method} by URL is not supported: {entry.url}")
        missing: list[str] = []
        resource = _rewrite(entry.resource, self.ids, missing)
        if missing:
            raise BadRequest(
                f"{', '.join(repr(m) for m in dict.fromkeys(missing))} names no entry's fullUrl"
            )
        if entry.method == "POST":
            return CreateOp(resource, assigned[entry.index])
        if resource_id is None:
            raise BadRequest(f"{entry.method} {entry.url} needs Type/id")
        if entry.method == "PUT":
            return UpdateOp(resource_type, resource_id, resource, entry.if_match)
        if entry.method == "DELETE":
            return DeleteOp(resource_type, resource_id, entry.if_match)
        current = await self.service.read(self.project, resource_type, resource_id)
        patched = apply_patch(current, *_patch_document(entry))
        return UpdateOp(resource_type, resource_id, patched, current.version_id)

    async def run(self, get: GetHandler, representation: bool) -> dict[str, Any]:
        _check_distinct(self.entries)
        await self._resolve_conditional()
        _check_distinct(self.entries)  # conditional entries now name what they found
        assigned = await self._assign_ids()
        ordered = sorted(self.entries, key=lambda e: _ORDER.get(e.method, 9))
        writes: list[tuple[_Entry, WriteOp]] = []
        for entry in ordered:
            if entry.method not in _ORDER:
                raise BadRequest(f"Bundle.entry[{entry.index}]: method {entry.method} unknown")
            if entry.method in ("GET", "HEAD") or entry.index in self.existing:
                continue
            if entry.index in self.unmatched:
                continue
            try:
                writes.append((entry, await self._op(entry, assigned)))
            except FhirError as exc:
                raise exc.located(f"Bundle.entry[{entry.index}]") from None
            resource_type = entry.url.split("/", 1)[0]
            for other in self.also_deleted.get(entry.index, ()):
                writes.append((entry, DeleteOp(resource_type, other)))
        # All entries are validated together: a large transaction is spread over the
        # validator's worker processes.
        ops = await self.service.prepare_many(
            self.project,
            [op for _, op in writes],
            where=[f"Bundle.entry[{entry.index}]" for entry, _ in writes],
        )
        results = await self.service.write(self.project, ops, self.context)
        out: dict[int, dict[str, Any]] = {}
        for (entry, _), result in zip(writes, results, strict=True):
            status = 201 if result.created else (204 if entry.method == "DELETE" else 200)
            out[entry.index] = _response(result, status, representation=representation)
        for index, found in self.existing.items():
            out[index] = _response(found, 200, representation=representation)
        for index in self.unmatched:
            out[index] = _response(None, 204, representation=False)
        for entry in ordered:
            if entry.method in ("GET", "HEAD"):
                out[entry.index] = {
                    "resource": await get(self.project, entry.url),
                    "response": {"status": "200 OK"},
                }
        return {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [out[e.index] for e in self.entries],
        }


async def _batch_entry(
    service: FhirService,
    project: str,
    context: WriteContext,
    entry: _Entry,
    get: GetHandler,
    representation: bool,
    multiple: bool = False,
) -> dict[str, Any]:
    resource_type, resource_id = _split_url(entry)
    if entry.method in ("GET", "HEAD"):
        return {"resource": await get(project, entry.url), "response": {"status": "200 OK"}}
    if entry.method == "POST":
        result = await service.create(
            project, entry.resource, context, if_none_exist=entry.if_none_exist
        )
        return _response(result, 201 if result.created else 200, representation=representation)
    if "?" in entry.url and entry.method in ("PUT", "DELETE", "PATCH"):
        return await _conditional_batch_entry(
            service, project, context, entry, representation, multiple
        )
    if resource_id is None or "?" in entry.url:
        raise BadRequest(f"{entry.method} {entry.url} needs Type/id")
    if entry.method == "PUT":
        result = await service.update(
            project, resource_type, resource_id, entry.resource, context, if_match=entry.if_match
        )
        return _response(result, 201 if result.created else 200, representation=representation)
    if entry.method == "DELETE":
        result = await service.delete(
            project, resource_type, resource_id, context, if_match=entry.if_match
        )
        return _response(result, 204, representation=False)
    if entry.method == "PATCH":
        document, media_type = _patch_document(entry)
        result = await service.patch(
            project,
            resource_type,
            resource_id,
            document,
            context,
            if_match=entry.if_match,
            media_type=media_type,
        )
        return _response(result, 200, representation=representation)
    raise BadRequest(f"method {entry.method} is not supported in a batch")


async def _conditional_batch_entry(
    service: FhirService,
    project: str,
    context: WriteContext,
    entry: _Entry,
    representation: bool,
    multiple: bool,
) -> dict[str, Any]:
    resource_type, search = entry.url.split("?", 1)
    if entry.method == "PUT":
        result = await conditional_update(
            service,
            project,
            resource_type,
            search,
            entry.resource,
            context,
            if_match=entry.if_match,
        )
        return _response(result, 201 if result.created else 200, representation=representation)
    if entry.method == "DELETE":
        await conditional_delete(
            service, project, resource_type, search, context, multiple=multiple
        )
        return _response(None, 204, representation=False)
    document, media_type = _patch_document(entry)
    result = await conditional_patch(
        service,
        project,
        resource_type,
        search,
        document,
        context,
        media_type=media_type,
        if_match=entry.if_match,
    )
    return _response(result, 200, representation=representation)


def _budgeted(get: GetHandler, budget: ResponseBudget) -> GetHandler:
    """``get`` spending ``budget`` on each answer (the reads of a Bundle are what grows)."""

    async def counted(project: str, url: str) -> Any:
        answer = await get(project, url)
        budget.spend(answer)
        return answer

    return counted


async def process_bundle(
    service: FhirService,
    project: str,
    bundle: Any,
    context: WriteContext,
    *,
    get: GetHandler,
    representation: bool = False,
    conditional_delete_multiple: bool = False,
) -> dict[str, Any]:
    """Run a transaction or batch Bundle; returns the response Bundle.

    Args:
        service: the FHIR service of the engine.
        project: the caller's project.
        bundle: the request Bundle (parsed JSON).
        context: who writes (author, trace, causation).
        get: ``async (project, url) -> resource`` for GET entries (read, vread or search).
        representation: include each written resource in its response entry.
        conditional_delete_multiple: a conditional delete entry may delete every match.

    Raises:
        FhirError: a transaction that failed as a whole (nothing was written).
    """
    kind, entries = _entries(bundle)
    multiple = conditional_delete_multiple
    service.limits.check_entries(kind, len(entries))
    get = _budgeted(get, ResponseBudget(service.limits))
    if kind == "transaction":
        transaction = _Transaction(service, project, context, entries, multiple)
        async with contextlib.AsyncExitStack() as locks:
            # Conditional entries search, then write: their types stay locked until the commit
            # (in sorted order, so two transactions never wait for each other).
            for locked in sorted({_split_url(e)[0] for e in entries if _conditional(e)}):
                await locks.enter_async_context(service.storage.exclusive(project, locked))
            return await transaction.run(get, representation)
    out: list[dict[str, Any]] = []
    for entry in entries:
        try:
            out.append(
                await _batch_entry(service, project, context, entry, get, representation, multiple)
            )
        except ResponseTooLarge:
            raise
        except FhirError as exc:
            out.append({"response": {"status": str(exc.status), "outcome": outcome_for(exc)}})
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out}
