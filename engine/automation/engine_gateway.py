"""The engine's :class:`fhirbots.bots.gateway.FhirGateway`: a bot's FHIR calls, performed
in-process.

A bot's ``fhir.create(...)`` reaches :class:`EngineFhirGateway` after the executor checked the
bot's access scopes. The call goes straight to the engine's
:class:`~fhirbots.engine.fhir.service.FhirService`
and :class:`~fhirbots.engine.fhir.search.SearchService` (no HTTP), inside the execution's project,
so validation, write checks and change events are exactly those of the REST API. Every write:

* carries the identity of :attr:`fhirbots.bots.gateway.CallContext.author` (the bot, or the
triggering
  author for ``runAs=author``), the trigger's traceparent and the causation chain (the
  trigger's chain plus this execution), which the matcher's loop guard reads;
* is tagged with the bot and the execution (:mod:`fhirbots.engine.automation.tags`).

Engine errors become :class:`fhirbots.bots.errors.FhirGatewayError` with the same status and
OperationOutcome, which the bot sees as a ``FhirError``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fhirbots.bots.errors import FhirGatewayError
from fhirbots.bots.gateway import CallContext
from fhirbots.engine.automation.tags import tag_resource
from fhirbots.engine.errors import FhirError
from fhirbots.engine.fhir.bundles import process_bundle
from fhirbots.engine.fhir.outcome import outcome_for
from fhirbots.engine.fhir.scopes import Scope, scoped
from fhirbots.engine.fhir.search import SearchService
from fhirbots.engine.fhir.searchset import searchset
from fhirbots.engine.fhir.service import FhirService, apply_json_patch
from fhirbots.engine.storage.model import WriteContext, WriteResult

__all__ = ["EngineFhirGateway", "GetUrl", "search_pairs", "search_scope"]

GetUrl = Callable[[str, str], Awaitable[Any]]
"""``(project, relative url) -> resource or Bundle`` for GET entries of a transaction."""

_WRITE_METHODS = frozenset({"POST", "PUT"})


def search_pairs(params: dict[str, Any]) -> list[tuple[str, str]]:
    """Search parameters as request pairs; a list value repeats its parameter (AND)."""
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        pairs.extend((str(name), _text(v)) for v in values)
    return pairs


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def search_scope(ctx: CallContext) -> Scope | None:
    """What the bot's searches may return or test (:mod:`fhirbots.engine.fhir.scopes`)."""
    return None if ctx.allows is None else Scope(ctx.bot, ctx.allows)


def _translated(exc: FhirError) -> FhirGatewayError:
    return FhirGatewayError(exc.message, status=exc.status, outcome=outcome_for(exc))


def _content(result: WriteResult) -> dict[str, Any]:
    stored = result.stored
    if stored is None or stored.content is None:
        raise FhirGatewayError("the write stored nothing", status=500)
    return stored.content


class EngineFhirGateway:
    """Performs bots' FHIR calls through the engine's services.

    Args:
        fhir: the engine's FHIR service (writes, reads).
        search: the engine's search service.
        get_url: resolves GET entries of transaction and batch Bundles.
        base_url: base of ``fullUrl`` and links in search Bundles (``http://host/fhir/R4``).
    """

    def __init__(
        self, fhir: FhirService, search: SearchService, get_url: GetUrl, base_url: str = ""
    ) -> None:
        self._fhir = fhir
        self._search = search
        self._get_url = get_url
        self._base = base_url.rstrip("/")

    @staticmethod
    def write_context(ctx: CallContext) -> WriteContext:
        """The datastore's write context of a call: author, trace, causation chain, and the
        execution's deadline, after which the datastore commits nothing of the call."""
        return WriteContext(
            author=ctx.author,
            traceparent=ctx.trace_id,
            causation=ctx.causation,
            deadline=ctx.deadline,
        )

    async def read(self, ctx: CallContext, resource_type: str, resource_id: str) -> dict[str, Any]:
        """The current version of a resource of the bot's project."""
        try:
            stored = await self._fhir.read(ctx.project, resource_type, resource_id)
        except FhirError as exc:
            raise _translated(exc) from exc
        assert stored.content is not None  # read() refuses deletions with 410
        return stored.content

    async def create(self, ctx: CallContext, resource: dict[str, Any]) -> dict[str, Any]:
        """Create a tagged resource under a server-assigned id."""
        tagged = tag_resource(resource, ctx.bot, ctx.execution_id)
        try:
            result = await self._fhir.create(ctx.project, tagged, self.write_context(ctx))
        except FhirError as exc:
            raise _translated(exc) from exc
        return _content(result)

    async def update(self, ctx: CallContext, resource: dict[str, Any]) -> dict[str, Any]:
        """Update (or create with its id) a tagged resource."""
        resource_id = resource.get("id")
        if not isinstance(resource_id, str) or not resource_id:
            raise FhirGatewayError("update needs the resource's id", code="invalid")
        tagged = tag_resource(resource, ctx.bot, ctx.execution_id)
        try:
            result = await self._fhir.update(
                ctx.project,
                str(resource.get("resourceType")),
                resource_id,
                tagged,
                self.write_context(ctx),
            )
        except FhirError as exc:
            raise _translated(exc) from exc
        return _content(result)

    async def patch(
        self, ctx: CallContext, resource_type: str, resource_id: str, patch: list[Any]
    ) -> dict[str, Any]:
        """Apply a JSON Patch to the current version; the result is tagged and version-checked."""
        try:
            current = await self._fhir.read(ctx.project, resource_type, resource_id)
            patched = tag_resource(apply_json_patch(current, patch), ctx.bot, ctx.execution_id)
            result = await self._fhir.update(
                ctx.project,
                resource_type,
                resource_id,
                patched,
                self.write_context(ctx),
                if_match=current.version_id,
            )
        except FhirError as exc:
            raise _translated(exc) from exc
        return _content(result)

    async def delete(self, ctx: CallContext, resource_type: str, resource_id: str) -> None:
        """Delete a resource (deleting what is absent changes nothing)."""
        try:
            await self._fhir.delete(
                ctx.project, resource_type, resource_id, self.write_context(ctx)
            )
        except FhirError as exc:
            raise _translated(exc) from exc

    async def search(
        self, ctx: CallContext, resource_type: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Search with the engine's full search semantics; a ``searchset`` Bundle."""
        pairs = search_pairs(params)
        try:
            with scoped(search_scope(ctx)):
                result = await self._search.search(ctx.project, resource_type, pairs)
        except FhirError as exc:
            raise _translated(exc) from exc
        return searchset(self._base, f"/{resource_type}", pairs, result)

    async def transaction(self, ctx: CallContext, bundle: dict[str, Any]) -> dict[str, Any]:
        """Run a transaction or batch Bundle; created and updated resources are tagged."""
        entries = []
        for entry in bundle.get("entry") or []:
            request = entry.get("request") if isinstance(entry, dict) else None
            method = str(request.get("method", "")).upper() if isinstance(request, dict) else ""
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if method in _WRITE_METHODS and isinstance(resource, dict):
                entry = {**entry, "resource": tag_resource(resource, ctx.bot, ctx.execution_id)}
            entries.append(entry)
        try:
            with scoped(search_scope(ctx)):  # for the Bundle's search entries
                return await process_bundle(
                    self._fhir,
                    ctx.project,
                    {**bundle, "entry": entries},
                    self.write_context(ctx),
                    get=self._get_url,
                    representation=True,
                )
        except FhirError as exc:
            raise _translated(exc) from exc
