"""A local harness for bot authors: run a bot's source on an input, against in-memory FHIR.

In a pytest test::

    from fhirbots.bots.testing import BotHarness

    async def test_flags_high_potassium():
        async with BotHarness() as harness:
            harness.gateway.put({"resourceType": "Patient", "id": "p1"})
            result = await harness.run(SOURCE, input=observation)
            assert result.ok
            assert harness.gateway.all("Flag")

Outside an event loop, :func:`run_bot` does the same in one call.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import jsonpatch

from fhirbots.bots.compile import compile_bot
from fhirbots.bots.errors import FhirGatewayError
from fhirbots.bots.executor import ExecutionRequest, ExecutionResult, ProcessBotExecutor
from fhirbots.bots.gateway import CallContext
from fhirbots.bots.policy import SandboxPolicy
from fhirbots.schemas.bot import AccessScope, Bot

__all__ = ["BotHarness", "InMemoryFhirGateway", "make_bot", "run_bot"]

_TOKEN_PARAMS = {"code": "code", "status": "status", "category": "category"}
_REFERENCE_PARAMS = {"subject": "subject", "patient": "subject", "encounter": "encounter"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _token_matches(element: Any, wanted: str) -> bool:
    system, _, code = wanted.rpartition("|") if "|" in wanted else ("", "", wanted)
    items = element if isinstance(element, list) else [element]
    for item in items:
        if isinstance(item, str) and item == code:
            return True
        if isinstance(item, dict):
            codings = item.get("coding") or [item]
            for coding in codings:
                if coding.get("code", coding.get("value")) == code and (
                    not system or coding.get("system") == system
                ):
                    return True
    return False


class InMemoryFhirGateway:
    """A dict-backed :class:`fhirbots.bots.gateway.FhirGateway` for tests and local runs.

    Search is deliberately small: ``_id``, ``_count``, ``identifier``, the token parameters
    ``code``/``status``/``category``, the references ``subject``/``patient``/``encounter``,
    and equality on any other top-level primitive element. Every call is recorded in
    :attr:`calls` as ``(method, context)``.
    """

    def __init__(self, resources: Iterable[Mapping[str, Any]] = ()) -> None:
        """Create a store holding ``resources`` (each needs ``resourceType`` and ``id``)."""
        self._store: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, CallContext]] = []
        for resource in resources:
            self.put(resource)

    # Direct access for test set-up and assertions -------------------------------------

    def put(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Store ``resource`` as is (an id is assigned if missing) and return the copy."""
        stored = copy.deepcopy(dict(resource))
        stored.setdefault("id", uuid.uuid4().hex)
        meta = stored.setdefault("meta", {})
        meta.setdefault("versionId", "1")
        meta.setdefault("lastUpdated", _now())
        self._store[(stored["resourceType"], stored["id"])] = stored
        return copy.deepcopy(stored)

    def get(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """The stored resource, or ``None``."""
        found = self._store.get((resource_type, resource_id))
        return copy.deepcopy(found) if found is not None else None

    def all(self, resource_type: str) -> list[dict[str, Any]]:
        """Every stored resource of a type."""
        return [copy.deepcopy(r) for (t, _), r in self._store.items() if t == resource_type]

    # FhirGateway ----------------------------------------------------------------------

    def _existing(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        found = self._store.get((resource_type, resource_id))
        if found is None:
            raise FhirGatewayError(
                f"{resource_type}/{resource_id} not found", status=404, code="not-found"
            )
        return found

    def _write(self, resource: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        stored = copy.deepcopy(resource)
        version = int((previous or {}).get("meta", {}).get("versionId", "0")) + 1
        stored["meta"] = {
            **stored.get("meta", {}),
            "versionId": str(version),
            "lastUpdated": _now(),
        }
        self._store[(stored["resourceType"], stored["id"])] = stored
        return copy.deepcopy(stored)

    async def read(self, ctx: CallContext, resource_type: str, resource_id: str) -> dict[str, Any]:
        """Read a resource (404 if missing)."""
        self.calls.append(("read", ctx))
        return copy.deepcopy(self._existing(resource_type, resource_id))

    async def create(self, ctx: CallContext, resource: dict[str, Any]) -> dict[str, Any]:
        """Create with a fresh id."""
        self.calls.append(("create", ctx))
        return self._write({**resource, "id": uuid.uuid4().hex}, None)

    async def update(self, ctx: CallContext, resource: dict[str, Any]) -> dict[str, Any]:
        """Update (or create with the given id)."""
        self.calls.append(("update", ctx))
        if not resource.get("id"):
            raise FhirGatewayError("update needs a resource id", code="invalid")
        previous = self._store.get((resource["resourceType"], resource["id"]))
        return self._write(resource, previous)

    async def patch(
        self, ctx: CallContext, resource_type: str, resource_id: str, patch: list[Any]
    ) -> dict[str, Any]:
        """Apply a JSON Patch."""
        self.calls.append(("patch", ctx))
        previous = self._existing(resource_type, resource_id)
        try:
            patched = jsonpatch.apply_patch(previous, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise FhirGatewayError(f"patch failed: {exc}", code="invalid") from exc
        if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
            raise FhirGatewayError("patch may not change resourceType or id", code="invalid")
        return self._write(patched, previous)

    async def delete(self, ctx: CallContext, resource_type: str, resource_id: str) -> None:
        """Delete (idempotent, as in FHIR)."""
        self.calls.append(("delete", ctx))
        self._store.pop((resource_type, resource_id), None)

    def _matches(self, resource: dict[str, Any], name: str, value: str) -> bool:
        if name == "_id":
            return resource.get("id") in value.split(",")
        if name == "identifier":
            return _token_matches(resource.get("identifier") or [], value)
        if name in _TOKEN_PARAMS:
            return _token_matches(resource.get(_TOKEN_PARAMS[name]), value)
        if name in _REFERENCE_PARAMS:
            reference = (resource.get(_REFERENCE_PARAMS[name]) or {}).get("reference", "")
            return bool(reference) and (reference == value or reference.endswith("/" + value))
        element = resource.get(name)
        if isinstance(element, str | int | float | bool):
            return str(element).lower() == value.lower()
        raise FhirGatewayError(
            f"search parameter {name!r} is not supported by the in-memory gateway",
            code="not-supported",
        )

    async def search(
        self, ctx: CallContext, resource_type: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Search with the small parameter set described on the class."""
        self.calls.append(("search", ctx))
        criteria = {k: str(v) for k, v in params.items() if k != "_count"}
        count = int(params.get("_count", 100))
        found = [
            r
            for (t, _), r in self._store.items()
            if t == resource_type and all(self._matches(r, k, v) for k, v in criteria.items())
        ]
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": copy.deepcopy(r)}
                for r in found[:count]
            ],
        }

    async def transaction(self, ctx: CallContext, bundle: dict[str, Any]) -> dict[str, Any]:
        """Run entries in order; ``urn:uuid:`` references of created entries are resolved."""
        self.calls.append(("transaction", ctx))
        entries = [copy.deepcopy(e) for e in bundle.get("entry") or []]
        aliases: dict[str, str] = {}
        for entry in entries:
            resource = entry.get("resource")
            if entry["request"]["method"].upper() == "POST" and resource is not None:
                resource["id"] = uuid.uuid4().hex
                if entry.get("fullUrl"):
                    aliases[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"
        responses = []
        for entry in entries:
            resource = _replace_references(entry.get("resource"), aliases)
            method = entry["request"]["method"].upper()
            url = entry["request"]["url"]
            if method == "POST":
                stored = self._write(resource, None)
                responses.append({"response": {"status": "201 Created"}, "resource": stored})
            elif method == "PUT":
                stored = await self.update(ctx, resource)
                responses.append({"response": {"status": "200 OK"}, "resource": stored})
            elif method == "DELETE":
                kind, _, rid = url.partition("/")
                await self.delete(ctx, kind, rid)
                responses.append({"response": {"status": "204 No Content"}})
            else:
                kind, _, rid = url.partition("/")
                stored = await self.read(ctx, kind, rid)
                responses.append({"response": {"status": "200 OK"}, "resource": stored})
        return {
            "resourceType": "Bundle",
            "type": f"{bundle.get('type', 'transaction')}-response",
            "entry": responses,
        }


def _replace_references(value: Any, aliases: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _replace_references(v, aliases) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_references(v, aliases) for v in value]
    if isinstance(value, str) and value in aliases:
        return aliases[value]
    return value


def make_bot(
    source: str,
    *,
    name: str = "test-bot",
    access: Iterable[Mapping[str, Any]] | None = None,
    secret: Iterable[str] = (),
    **fields: Any,
) -> Bot:
    """A :class:`fhirbots.schemas.bot.Bot` around ``source`` for local runs.

    Args:
        source: the bot's Python source.
        name: its name.
        access: access scopes as FHIR JSON (``{"resourceType": ..., "interaction": [...]}``);
            ``None`` allows everything.
        secret: names of secrets it may read.
        **fields: any other Bot field (``timeout``, ``memory_limit``, ``run_as``...).
    """
    scopes = None if access is None else tuple(AccessScope.model_validate(a) for a in access)
    return Bot(
        id=fields.pop("id", "local-" + uuid.uuid4().hex[:12]),
        name=name,
        code=source,
        access=scopes,
        secret=tuple(secret),
        **fields,
    )


class BotHarness:
    """An executor with one worker and an in-memory gateway, for tests.

    Attributes:
        gateway: the in-memory FHIR store the bots read and write.
        executor: the underlying executor.
    """

    def __init__(
        self,
        gateway: InMemoryFhirGateway | None = None,
        policy: SandboxPolicy | None = None,
    ) -> None:
        """Create a harness (started by ``async with``)."""
        self.gateway = gateway or InMemoryFhirGateway()
        self.policy = policy or SandboxPolicy(pool_size=1)
        self.executor = ProcessBotExecutor(self.gateway, self.policy)

    async def __aenter__(self) -> BotHarness:
        await self.executor.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.executor.close()

    async def run(
        self,
        bot: Bot | str,
        input: Any = None,
        **request: Any,
    ) -> ExecutionResult:
        """Run ``bot`` (a Bot or its source) on ``input``.

        Source is first checked with :func:`fhirbots.bots.compile.compile_bot`, so a refused bot
        raises
        :class:`fhirbots.bots.errors.BotCompileError` with its problems, as a deploy would.

        Args:
            bot: the bot or its source.
            input: ``event.input``.
            **request: other :class:`fhirbots.bots.executor.ExecutionRequest` fields (``secrets``,
                ``requester``, ``content_type``...).
        """
        if isinstance(bot, str):
            bot = make_bot(bot)
        compile_bot(bot.code, self.policy)
        return await self.executor.execute(ExecutionRequest(bot=bot, input=input, **request))


def run_bot(
    bot: Bot | str,
    input: Any = None,
    *,
    gateway: InMemoryFhirGateway | None = None,
    policy: SandboxPolicy | None = None,
    **request: Any,
) -> ExecutionResult:
    """Run a bot once, synchronously, with a fresh worker (outside any event loop).

    Args:
        bot: the bot or its source.
        input: ``event.input``.
        gateway: the in-memory store to use (pass one to inspect it afterwards).
        policy: sandbox policy; defaults to one worker.
        **request: other :class:`fhirbots.bots.executor.ExecutionRequest` fields.
    """

    async def once() -> ExecutionResult:
        async with BotHarness(gateway, policy) as harness:
            return await harness.run(bot, input, **request)

    return asyncio.run(once())
