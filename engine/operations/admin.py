"""The admin API: projects and their API keys, for the engine's operator (an admin key).

Every route answers 403 to a project's own keys, before reading anything::

    GET  /admin/projects                  the projects
    POST /admin/projects                  {"id", "name"?} -> the project and its first key
    GET  /admin/keys[?project=P]          the keys (never their secrets)
    POST /admin/keys                      {"project", "name"?, "scope"?} -> a new key
    POST /admin/keys/<id>/revoke          revoke a key (401 everywhere at once)

A new key's secret is in the answer that creates it, and nowhere else ever again (only its hash
is stored). ``scope`` limits what a key may do inside its project:
``{"resourceTypes": [...], "interactions": [...]}`` (a missing member: every type, every
interaction; ``read-only`` in the CLI is the interactions of
:data:`fhirbots.engine.web.auth.READ_ONLY`). ``fhirbots project`` and ``fhirbots key`` call
these routes.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from fhirbots.engine.errors import BadRequest, Conflict, Forbidden, Issue, NotFound, Unprocessable
from fhirbots.engine.fhir.service import check_type
from fhirbots.engine.storage.model import ApiKeyRecord, ProjectRecord
from fhirbots.engine.storage.port import Storage
from fhirbots.engine.web.auth import KeyScope, generate_key, hash_key
from fhirbots.engine.web.context import principal
from fhirbots.engine.web.http import fhir_response

__all__ = ["ADMIN_PATH", "INTERACTIONS", "install", "key_json", "parse_scope"]

ADMIN_PATH = "/admin"
"""Beside the FHIR base, not under it: these are not FHIR interactions or operations."""

INTERACTIONS = frozenset(
    {"read", "vread", "search", "history", "create", "update", "patch", "delete", "operation"}
)
"""What a key's scope can name (``operation``: the ``$`` operations that are not reads)."""

_PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-.]{0,63}$")


def _refuse(message: str) -> Unprocessable:
    return Unprocessable(message, issues=(Issue(message, code="invalid"),))


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def key_json(record: ApiKeyRecord) -> dict[str, Any]:
    """A key as the admin API shows it: never its secret (nor its hash)."""
    scope = KeyScope.from_json(record.scope)
    return {
        "id": record.id,
        "project": record.project,
        "name": record.name,
        "admin": record.admin,
        "scope": None
        if scope is None
        else {
            k: sorted(v)
            for k, v in (
                ("resourceTypes", scope.resource_types),
                ("interactions", scope.interactions),
            )
            if v is not None
        },
        "created": _time(record.created),
        "lastUsed": _time(record.last_used),
        "revoked": _time(record.revoked),
    }


def _project_json(record: ProjectRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "created": _time(record.created)}


def parse_scope(value: Any) -> KeyScope | None:
    """A key's scope from its JSON form (None or ``{}``: unscoped).

    Raises:
        Unprocessable: an unknown member, type or interaction, or an empty list.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"resourceTypes", "interactions"}:
        raise _refuse('scope must be {"resourceTypes": [...], "interactions": [...]}')
    lists: dict[str, frozenset[str] | None] = {}
    for member in ("resourceTypes", "interactions"):
        items = value.get(member)
        if items is None:
            lists[member] = None
            continue
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            raise _refuse(f"scope.{member} must be a non-empty list of strings")
        lists[member] = frozenset(items)
    for resource_type in lists["resourceTypes"] or ():
        try:
            check_type(resource_type)
        except NotFound as exc:
            raise _refuse(f"scope.resourceTypes: {exc}") from exc
    unknown = (lists["interactions"] or frozenset()) - INTERACTIONS
    if unknown:
        raise _refuse(
            f"scope.interactions: unknown {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(INTERACTIONS))})"
        )
    if lists["resourceTypes"] is None and lists["interactions"] is None:
        return None
    return KeyScope(lists["resourceTypes"], lists["interactions"])


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _operator_only(request: web.Request) -> None:
    if not principal(request).admin:
        raise Forbidden("the admin API is for the engine's operator (an admin key)")


class _Admin:
    """The admin API's handlers over ``storage``."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def new_key(
        self, project: str, name: str, scope: KeyScope | None
    ) -> tuple[ApiKeyRecord, str]:
        secret = generate_key()
        stored = None if scope is None else scope.to_json()
        record = await self.storage.add_api_key(project, hash_key(secret), name=name, scope=stored)
        return record, secret

    async def known_project(self, project: Any) -> str:
        if not isinstance(project, str) or not project:
            raise BadRequest("project is required")
        if project not in {p.id for p in await self.storage.list_projects()}:
            raise NotFound(f"no project {project!r}")
        return project

    async def list_projects(self, request: web.Request) -> web.Response:
        _operator_only(request)
        projects = await self.storage.list_projects()
        return fhir_response({"projects": [_project_json(p) for p in projects]})

    async def create_project(self, request: web.Request) -> web.Response:
        _operator_only(request)
        body = await _body(request)
        project = body.get("id")
        if not isinstance(project, str) or not _PROJECT_ID.match(project):
            raise _refuse(
                "id must be 1-64 letters, digits, '-' or '.', starting with a letter or digit"
            )
        name = body.get("name") or project
        if not isinstance(name, str):
            raise _refuse("name must be a string")
        if not await self.storage.ensure_project(project, name):
            raise Conflict(f"project {project!r} already exists")
        record, secret = await self.new_key(project, "first", None)
        created = next(p for p in await self.storage.list_projects() if p.id == project)
        answer = {"project": _project_json(created), "key": {**key_json(record), "secret": secret}}
        return fhir_response(answer, status=201)

    async def list_keys(self, request: web.Request) -> web.Response:
        _operator_only(request)
        project = request.query.get("project")
        if project is not None:
            await self.known_project(project)
        keys = await self.storage.list_api_keys(project)
        return fhir_response({"keys": [key_json(k) for k in keys]})

    async def create_key(self, request: web.Request) -> web.Response:
        _operator_only(request)
        body = await _body(request)
        project = await self.known_project(body.get("project"))
        name = body.get("name") or "key"
        if not isinstance(name, str):
            raise _refuse("name must be a string")
        record, secret = await self.new_key(project, name, parse_scope(body.get("scope")))
        return fhir_response({"key": {**key_json(record), "secret": secret}}, status=201)

    async def revoke_key(self, request: web.Request) -> web.Response:
        _operator_only(request)
        key_id = request.match_info["id"]
        if await self.storage.get_api_key(key_id) is None:
            raise NotFound(f"no API key {key_id!r}")
        await self.storage.revoke_api_key(key_id)  # a key revoked before stays as it was
        found = await self.storage.get_api_key(key_id)
        assert found is not None
        return fhir_response({"key": key_json(found)})


def install(storage: Storage, routes: list[web.RouteDef]) -> None:
    """Add the admin API's routes to ``routes``."""
    admin = _Admin(storage)
    routes.extend(
        [
            web.get(f"{ADMIN_PATH}/projects", admin.list_projects),
            web.post(f"{ADMIN_PATH}/projects", admin.create_project),
            web.get(f"{ADMIN_PATH}/keys", admin.list_keys),
            web.post(f"{ADMIN_PATH}/keys", admin.create_key),
            web.post(f"{ADMIN_PATH}/keys/{{id}}/revoke", admin.revoke_key),
        ]
    )
