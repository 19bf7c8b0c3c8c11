"""What a REST request may carry and do, by who sends it (after authentication).

* **Scoped keys.** A key with a :class:`~fhirbots.engine.web.auth.KeyScope` may use only its
  interactions on its resource types. Each request is mapped to the ``(type, interaction)``
  pairs it needs (:func:`required`): a read, vread, search, history, create, update, patch or
  delete of a type (``*`` for the system-level search and history), every entry of a batch or
  transaction Bundle, and ``operation`` for a ``$`` operation sent with POST (GET operations
  are searches). Anything outside the scope is refused with 403 naming the key, the type, the
  interaction and the scope that would allow it. Searches are also checked for what they return
  or test (:mod:`fhirbots.engine.fhir.scopes`). A scoped key may not use routes outside the FHIR
  base (the dashboard, the admin API).
* **The bot tag.** Only a bot's writes carry the tags that say a bot wrote a version
  (:mod:`fhirbots.engine.automation.tags`). A REST create, update, or Bundle entry resource
  that carries them has them **stripped** before it is stored (a client that read a version a
  bot wrote and sends it back changed it: its version was not written by the bot); a PATCH,
  or a Bundle's PATCH entry, whose body names their systems is **refused** with 422 (a patch
  that sets them cannot be stripped meaningfully).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from fhirbots.engine.automation.tags import BOT_TAG_SYSTEM, EXECUTION_TAG_SYSTEM
from fhirbots.engine.errors import BadRequest, Forbidden, Issue, Unprocessable
from fhirbots.engine.fhir.scopes import ANY_TYPE
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.web.auth import KeyScope
from fhirbots.engine.web.context import PRINCIPAL

__all__ = ["BOT_SYSTEMS", "key_access_middleware", "required", "strip_bot_tags"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BOT_SYSTEMS = frozenset({BOT_TAG_SYSTEM, EXECUTION_TAG_SYSTEM})
"""Tag systems only bots' writes may carry."""

_MARK = b"fhirbots.dev/fhir/CodeSystem/bot"
"""In every body that names a bot tag system without escapes; only bodies that hold it (or an
escape that could disguise it) are parsed here."""

_WRITES = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_OPEN = frozenset({"metadata", "openapi.json"})


def _path_needs(method: str, parts: list[str]) -> list[tuple[str, str]]:
    """The pairs a request to ``[base]/<parts>`` needs (a Bundle's entries apart)."""
    if not parts or parts == ["_search"]:
        return [(ANY_TYPE, "search")] if method != "POST" or parts else []
    if parts[0] in _OPEN:
        return []
    if parts[0] == "_history":
        return [(ANY_TYPE, "history")]
    if parts[0].startswith("$"):
        return [(ANY_TYPE, "operation" if method == "POST" else "search")]
    resource_type, rest = parts[0], parts[1:]
    if any(p.startswith("$") for p in rest):
        return [(resource_type, "operation" if method == "POST" else "search")]
    if not rest:
        return [(resource_type, "search" if method == "GET" else _WRITES.get(method, method))]
    if rest == ["_search"]:
        return [(resource_type, "search")]
    if rest[-1] == "_history" or rest == ["_history"]:
        return [(resource_type, "history")]
    if len(rest) == 3 and rest[1] == "_history":
        return [(resource_type, "vread")]
    return [(resource_type, "read" if method == "GET" else _WRITES.get(method, method))]


def _entry_needs(entry: Any) -> list[tuple[str, str]]:
    request = entry.get("request") if isinstance(entry, dict) else None
    if not isinstance(request, dict):
        raise BadRequest("every Bundle entry needs a request")
    url = str(request.get("url", ""))
    split = urlsplit(url)
    parts = [p for p in split.path.split("/") if p]
    method = str(request.get("method", "")).upper()
    if method == "GET" and split.query and len(parts) == 1:
        return [(parts[0], "search")]
    return _path_needs(method, parts)


def required(method: str, path: str, body: Any) -> list[tuple[str, str]]:
    """The ``(type, interaction)`` pairs ``method path`` (under the FHIR base) with ``body``
    (parsed JSON, for a Bundle) needs."""
    parts = [p for p in path.removeprefix(API_PATH).split("/") if p]
    needs = _path_needs(method, parts)
    if method == "POST" and not parts and isinstance(body, dict):
        entries = body.get("entry") or []
        if isinstance(entries, list):
            for entry in entries:
                needs.extend(_entry_needs(entry))
    return needs


def _check_scope(holder: str, scope: KeyScope, needs: list[tuple[str, str]]) -> None:
    for resource_type, interaction in needs:
        if not scope.allows(resource_type, interaction):
            kind = "every type" if resource_type == ANY_TYPE else resource_type
            message = f"{holder} may not {interaction} {kind}: its scope allows {scope.describe()}"
            raise Forbidden(message, issues=(Issue(message, code="forbidden"),))


def _strip(resource: Any) -> bool:
    meta = resource.get("meta") if isinstance(resource, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("tag"), list):
        return False
    tags: list[Any] = meta["tag"]
    kept = [t for t in tags if not (isinstance(t, dict) and t.get("system") in BOT_SYSTEMS)]
    if len(kept) == len(tags):
        return False
    if kept:
        meta["tag"] = kept
    else:
        del meta["tag"]
    return True


def strip_bot_tags(body: Any) -> bool:
    """Remove the bot tags from a resource, or from each entry resource of a Bundle (in
    place); whether any were there."""
    stripped = _strip(body)
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        for entry in body.get("entry") or []:
            if isinstance(entry, dict):
                stripped = _strip(entry.get("resource")) or stripped
    return stripped


def _names_bot_system(parsed: Any) -> bool:
    text = orjson.dumps(parsed).decode()  # escapes (\\/, \\u0062) undone by the parse
    return any(s in text for s in BOT_SYSTEMS)


def _patches(method: str, body: Any) -> list[Any]:
    """The patch bodies of a PATCH request, or of a Bundle's PATCH entries."""
    if method == "PATCH":
        return [body]
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return []
    return [
        entry.get("resource")
        for entry in body.get("entry") or []
        if isinstance(entry, dict)
        and isinstance(entry.get("request"), dict)
        and str(entry["request"].get("method", "")).upper() == "PATCH"
    ]


def _may_name_bot_system(raw: bytes) -> bool:
    """Whether ``raw`` may hold a bot tag system: spelled out, or disguised by the only JSON
    escapes that can spell its characters (``\\/`` and ``\\uXXXX``)."""
    return _MARK in raw or b"\\/" in raw or b"\\u" in raw


async def _parsed_body(request: web.Request, scoped: bool) -> Any:
    """The request's JSON body when it must be looked into (None otherwise, or not JSON): a
    scoped key's Bundle (its entries), or a write that may carry a bot tag.

    Operations are left alone: some tell by ``can_read_body`` whether a body was sent, which is
    False once the body was read here."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.can_read_body:
        return None
    if "/$" in request.path or request.path.endswith("/_search"):
        return None  # an operation's or a search's body: no resource stored as sent
    raw = await request.read()  # kept by aiohttp: the handler reads the same bytes
    bundle = scoped and request.path.rstrip("/") == API_PATH
    if not raw or not (bundle or _may_name_bot_system(raw)):
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # the handler answers what is wrong with it


@web.middleware
async def key_access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check a scoped key's request against its scope, and keep bot tags out of REST writes."""
    caller = request.get(PRINCIPAL)
    scope = caller.scope if caller is not None else None
    if request.path != API_PATH and not request.path.startswith(API_PATH + "/"):
        if caller is not None and scope is not None:
            raise Forbidden(f"{caller.author} is a scoped key: only the FHIR API is open to it")
        return await handler(request)
    parsed = await _parsed_body(request, scope is not None)
    if caller is not None and scope is not None:
        _check_scope(caller.author, scope, required(request.method, request.path, parsed))
    if parsed is not None and any(_names_bot_system(p) for p in _patches(request.method, parsed)):
        message = (
            "a PATCH may not set the tags that say a bot wrote a version "
            f"({', '.join(sorted(BOT_SYSTEMS))}): only bots' writes carry them"
        )
        raise Unprocessable(message, issues=(Issue(message, code="business-rule"),))
    if parsed is not None and request.method != "PATCH" and strip_bot_tags(parsed):
        # Handlers read the body through read(), which returns what it kept: the stripped one.
        request._read_bytes = orjson.dumps(parsed)
    parsed = None  # not held while the handler parses the body again
    return await handler(request)
