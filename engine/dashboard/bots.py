"""The Bots view: every Bot of the project with its triggers and recent figures, and one Bot's
editor, sample input, runs, version history and recording setting; ``/api/bots``.

Saving code is two steps the page takes: ``POST /api/bots/{id}/check`` compiles it under the
engine's sandbox policy and answers every problem with its line and column (and whether the
code is what the Bot already runs); only clean, changed code is then deployed through the FHIR
API's ``Bot/{id}/$deploy`` with the session, which stores a new version whatever it is given.
Figures come from the observatory store's windows (per bot and status), the last run from its
execution records.

The sample input of a Bot is kept on the Bot itself, as the extension
:data:`SAMPLE_INPUT_URL` with two parts: ``contentType`` (``valueCode``) and ``value``
(``valueString``), so it travels with the Bot (export, history) and needs no store of its own.
Every write made here is a new version of the Bot and an AuditEvent naming the key.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import orjson
from aiohttp import web

from fhirbots.bots.compile import compile_bot
from fhirbots.bots.errors import BotCompileError
from fhirbots.engine.dashboard.audit import audit_action
from fhirbots.engine.dashboard.context import caller, deps, render
from fhirbots.engine.dashboard.executions import (
    HL7V2_MEDIA,
    bot_reference,
    record_json,
    run_bot,
)
from fhirbots.engine.dashboard.times import instant
from fhirbots.engine.errors import BadRequest, Unprocessable
from fhirbots.engine.observability.tracing import new_traceparent
from fhirbots.engine.observatory.model import WINDOW
from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.engine.observatory.windows import window_start
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.storage.model import StoredResource, WriteContext
from fhirbots.engine.web.http import read_json
from fhirbots.schemas.bot import ExecutionRecording

__all__ = [
    "RANGES",
    "SAMPLE_INPUT_URL",
    "SAMPLE_TYPES",
    "parse_sample",
    "routes",
    "sample_of",
    "with_sample",
]

SAMPLE_INPUT_URL = "https://fhirbots.dev/StructureDefinition/sample-input"
"""Extension of a Bot holding the input the dashboard runs it with."""

SAMPLE_TYPES: dict[str, str] = {
    "application/fhir+json": "a FHIR resource (JSON)",
    "application/json": "JSON",
    HL7V2_MEDIA: "an HL7 v2 message",
    "text/plain": "text",
}
"""Media types of a sample input (as ``$execute`` gives them to the bot), with their names."""

SAMPLE_MAX_BYTES = 256 * 1024
"""Largest sample input: as much as an execution record keeps of an input, so a run from the
dashboard can always be run again from its record."""

RANGES: dict[str, timedelta] = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
"""Spans of the figures shown for each bot."""

HISTORY_LIMIT = 100
"""Versions listed in a Bot's history (newest first)."""

RECENT_RUNS = 10
"""Executions listed on a Bot's page."""

_FAILED_EXCLUDES = ("success", "skipped")
"""Statuses that are not failures (a skipped run was refused by the loop guard, on purpose)."""


def sample_of(resource: dict[str, Any]) -> dict[str, str] | None:
    """The sample input stored on a Bot: ``{"content_type", "text"}``, or None."""
    for extension in resource.get("extension") or ():
        if not isinstance(extension, dict) or extension.get("url") != SAMPLE_INPUT_URL:
            continue
        parts = {
            part.get("url"): part
            for part in extension.get("extension") or ()
            if isinstance(part, dict)
        }
        text = parts.get("value", {}).get("valueString")
        media = parts.get("contentType", {}).get("valueCode")
        if isinstance(text, str):
            return {
                "content_type": media if isinstance(media, str) else "application/json",
                "text": text,
            }
    return None


def with_sample(resource: dict[str, Any], content_type: str, text: str) -> dict[str, Any]:
    """``resource`` with its sample input replaced (removed when ``text`` is empty)."""
    others = [
        e
        for e in resource.get("extension") or ()
        if not (isinstance(e, dict) and e.get("url") == SAMPLE_INPUT_URL)
    ]
    if text:
        others.append(
            {
                "url": SAMPLE_INPUT_URL,
                "extension": [
                    {"url": "contentType", "valueCode": content_type},
                    {"url": "value", "valueString": text},
                ],
            }
        )
    out = {k: v for k, v in resource.items() if k != "extension"}
    if others:
        out["extension"] = others
    return out


def parse_sample(text: str, content_type: str) -> Any:
    """The value a bot is given for ``text`` sent as ``content_type`` (as ``$execute`` parses
    a body: JSON parsed, HL7 v2 with its segments ended by ``\\r``, text as it is).

    Raises:
        BadRequest: an unknown media type, or JSON that does not parse.
    """
    if content_type not in SAMPLE_TYPES:
        raise BadRequest(f"content_type must be one of {', '.join(SAMPLE_TYPES)}")
    if content_type.endswith("json"):
        if not text.strip():
            return None
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the sample input is not JSON: {exc}") from exc
    if content_type == HL7V2_MEDIA:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return "\r".join(line for line in lines if line)
    return text


def _figures(by_status: dict[str, dict[str, Any]]) -> dict[str, Any]:
    runs = sum(s["count"] for s in by_status.values())
    failed = sum(s["count"] for name, s in by_status.items() if name not in _FAILED_EXCLUDES)
    succeeded = by_status.get("success") or {}
    return {
        "runs": runs,
        "failed": failed,
        "error_rate": failed / runs if runs else None,
        # The store keeps quantiles per (bot, status), which cannot be merged; a bot's typical
        # duration is that of its successful runs (failures are in by_status).
        "p50_ms": succeeded.get("p50_ms"),
        "p99_ms": succeeded.get("p99_ms"),
        "by_status": by_status,
    }


async def _stats(store: ObservatoryStore, project: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Range -> ``Bot/<id>`` -> figures, from one total per (bot, status) and range."""
    until = window_start(datetime.now(UTC)) + WINDOW
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, span in RANGES.items():
        per_bot: dict[str, dict[str, dict[str, Any]]] = {}
        for point in await store.series(project, "executions", until - span, until, span):
            bot, status = point.dims[0], point.dims[1]
            per_bot.setdefault(bot, {})[status] = {
                "count": point.count,
                "p50_ms": point.p50_ms,
                "p99_ms": point.p99_ms,
            }
        out[name] = {bot: _figures(statuses) for bot, statuses in per_bot.items()}
    return out


def _triggers(
    bot_id: str, content: dict[str, Any], subscriptions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Subscriptions whose endpoint is this Bot, and its cron schedule."""
    reference = f"Bot/{bot_id}"
    out: list[dict[str, Any]] = [
        {
            "kind": "subscription",
            "subscription": f"Subscription/{s.get('id')}",
            "status": s.get("status"),
            "criteria": s.get("criteria"),
            "reason": s.get("reason"),
            "channel": (s.get("channel") or {}).get("type"),
        }
        for s in subscriptions
        if (s.get("channel") or {}).get("endpoint") == reference
    ]
    if content.get("cronString"):
        out.append({"kind": "cron", "cron": content["cronString"]})
    return out


def _summary(
    stored: StoredResource,
    subscriptions: list[dict[str, Any]],
    stats: dict[str, dict[str, dict[str, Any]]],
    last: dict[str, Any] | None,
) -> dict[str, Any]:
    content = stored.content or {}
    reference = f"Bot/{stored.id}"
    return {
        "id": stored.id,
        "reference": reference,
        "name": content.get("name"),
        "description": content.get("description"),
        "status": content.get("status", "active"),
        "version": str(stored.version_id),
        "last_updated": instant(stored.last_updated),
        "cron_string": content.get("cronString"),
        "execution_recording": content.get("executionRecording", "all"),
        "timeout": content.get("timeout"),
        "triggers": _triggers(stored.id, content, subscriptions),
        "last_run": last,
        "stats": {name: per_bot.get(reference) or _figures({}) for name, per_bot in stats.items()},
    }


async def _last_run(store: ObservatoryStore, project: str, reference: str) -> dict[str, Any] | None:
    newest = await store.executions(project, bot=reference, limit=1)
    return record_json(newest[0]) if newest else None


async def bot_summaries(request: web.Request) -> list[dict[str, Any]]:
    """Every Bot of the caller's project, by name, with triggers, last run and figures."""
    project = caller(request).project
    dashboard = deps(request)
    stored = await dashboard.fhir.storage.current_resources(project, "Bot", "Subscription")
    subscriptions = [s.content for s in stored if s.resource_type == "Subscription" and s.content]
    bots = [s for s in stored if s.resource_type == "Bot" and s.content is not None]
    bots.sort(key=lambda s: (str((s.content or {}).get("name", "")).lower(), s.id))
    stats = await _stats(dashboard.observatory, project)
    store = dashboard.observatory
    return [
        _summary(s, subscriptions, stats, await _last_run(store, project, f"Bot/{s.id}"))
        for s in bots
    ]


async def _read_bot(request: web.Request) -> StoredResource:
    stored = await deps(request).fhir.read(caller(request).project, "Bot", request.match_info["id"])
    assert stored.content is not None  # read() refuses deletions
    return stored


async def bot_detail(request: web.Request) -> dict[str, Any]:
    """One Bot: its summary, code, sample input and latest runs."""
    stored = await _read_bot(request)
    project = caller(request).project
    dashboard = deps(request)
    subscriptions = [
        s.content
        for s in await dashboard.fhir.storage.current_resources(project, "Subscription")
        if s.content
    ]
    reference = f"Bot/{stored.id}"
    recent = await dashboard.observatory.executions(project, bot=reference, limit=RECENT_RUNS)
    stats = await _stats(dashboard.observatory, project)
    detail = _summary(stored, subscriptions, stats, record_json(recent[0]) if recent else None)
    content = stored.content or {}
    detail |= {
        "code": content.get("code", ""),
        "sample": sample_of(content),
        "recent": [record_json(r) for r in recent],
    }
    return detail


async def _body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name!r} must be a string")
    return value


def _unchanged(current: StoredResource) -> web.Response:
    """The answer of a save that had nothing to write: the Bot already holds what was sent."""
    return web.json_response({"unchanged": True, "version": str(current.version_id)})


async def _save_version(
    request: web.Request,
    current: StoredResource,
    content: dict[str, Any],
    subtype: str,
    describe: Callable[[int], str],
) -> web.Response:
    """Store ``content`` as the next version of the Bot (refused if another write came first),
    audit it as ``subtype`` with ``describe(new version)``, and answer the new version."""
    who = caller(request)
    fhir = deps(request).fhir
    written = await fhir.update(
        who.project,
        "Bot",
        current.id,
        content,
        WriteContext(author=who.author, traceparent=new_traceparent()),
        if_match=current.version_id,
    )
    stored = written.stored
    assert stored is not None
    await audit_action(
        fhir, who, subtype, describe(stored.version_id), action="U", entity=f"Bot/{current.id}"
    )
    return web.json_response({"unchanged": False, "version": str(stored.version_id)})


async def bots_json(request: web.Request) -> web.Response:
    """``GET /api/bots``."""
    return web.json_response(
        {"project": caller(request).project, "bots": await bot_summaries(request)}
    )


async def bot_json(request: web.Request) -> web.Response:
    """``GET /api/bots/{id}``."""
    return web.json_response(await bot_detail(request))


async def check(request: web.Request) -> web.Response:
    """``POST /api/bots/{id}/check`` with ``{"code"}``: the compile problems (line and column
    from 1) and whether the code is the one the Bot already runs (then nothing is deployed)."""
    code = _text(await _body(request), "code")
    current = await _read_bot(request)
    problems: list[dict[str, Any]] = []
    try:
        # The policy the runtime runs and the Bot write check compiles with.
        compile_bot(code, deps(request).bots.policy)
    except BotCompileError as exc:
        problems = [
            {"line": p.line, "column": p.column + 1, "message": p.message, "severity": "error"}
            for p in exc.problems
        ]
    return web.json_response(
        {
            "ok": not problems,
            "problems": problems,
            "unchanged": code == (current.content or {}).get("code"),
            "version": str(current.version_id),
        }
    )


async def history(request: web.Request) -> web.Response:
    """``GET /api/bots/{id}/history``: the versions, newest first, which of them changed the
    code and which hold the code the Bot runs now (rolling back to those changes nothing)."""
    who = caller(request)
    bot_id = request.match_info["id"]
    page = await deps(request).fhir.history(who.project, "Bot", bot_id, count=HISTORY_LIMIT)
    entries = page.entries
    current = (entries[0].content or {}).get("code") if entries else None
    versions = []
    for i, entry in enumerate(entries):
        code = (entry.content or {}).get("code")
        older = entries[i + 1] if i + 1 < len(entries) else None
        previous = (older.content or {}).get("code") if older is not None else None
        versions.append(
            {
                "version": str(entry.version_id),
                "last_updated": instant(entry.last_updated),
                "deleted": entry.deleted,
                "code_changed": older is None or code != previous,
                "code_is_current": code == current,
                "lines": len(code.splitlines()) if isinstance(code, str) else 0,
            }
        )
    return web.json_response({"total": page.total, "versions": versions})


async def version(request: web.Request) -> web.Response:
    """``GET /api/bots/{id}/history/{version}``: the code of one version."""
    who = caller(request)
    stored = await deps(request).fhir.vread(
        who.project, "Bot", request.match_info["id"], request.match_info["version"]
    )
    return web.json_response(
        {
            "version": str(stored.version_id),
            "last_updated": instant(stored.last_updated),
            "code": (stored.content or {}).get("code", ""),
        }
    )


async def rollback(request: web.Request) -> web.Response:
    """``POST /api/bots/{id}/rollback`` with ``{"version"}``: that version's code as a new
    version (nothing is written when it is the current code)."""
    target = _text(await _body(request), "version")
    current = await _read_bot(request)
    old = await deps(request).fhir.vread(caller(request).project, "Bot", current.id, target)
    code = (old.content or {}).get("code", "")
    content = current.content or {}
    if code == content.get("code"):
        return _unchanged(current)
    return await _save_version(
        request,
        current,
        {**content, "code": code},
        "bot-rollback",
        lambda version: (
            f"rolled Bot/{current.id} back to the code of version {target} (now version {version})"
        ),
    )


async def save_sample(request: web.Request) -> web.Response:
    """``PUT /api/bots/{id}/sample`` with ``{"content_type", "text"}`` (empty text removes it)."""
    body = await _body(request)
    text = _text(body, "text")
    media = _text(body, "content_type")
    if len(text.encode()) > SAMPLE_MAX_BYTES:
        raise Unprocessable(f"a sample input holds at most {SAMPLE_MAX_BYTES} bytes")
    parse_sample(text, media)  # refuse what a run could not use
    current = await _read_bot(request)
    content = current.content or {}
    updated = with_sample(content, media, text)
    if updated == content:
        return _unchanged(current)
    return await _save_version(
        request,
        current,
        updated,
        "bot-sample-input",
        lambda version: (
            f"{'saved' if text else 'removed'} the sample input of Bot/{current.id} "
            f"(version {version})"
        ),
    )


async def save_recording(request: web.Request) -> web.Response:
    """``PUT /api/bots/{id}/recording`` with ``{"execution_recording": "all|errors|none"}``."""
    choice = _text(await _body(request), "execution_recording")
    allowed = get_args(ExecutionRecording)
    if choice not in allowed:
        raise BadRequest(f"execution_recording must be one of {', '.join(allowed)}")
    current = await _read_bot(request)
    content = current.content or {}
    if content.get("executionRecording", "all") == choice:
        return _unchanged(current)
    return await _save_version(
        request,
        current,
        {**content, "executionRecording": choice},
        "bot-recording",
        lambda version: (
            f"set executionRecording of Bot/{current.id} to {choice} (version {version})"
        ),
    )


async def run(request: web.Request) -> web.Response:
    """``POST /api/bots/{id}/run`` with ``{"content_type", "input"}`` (both absent: the saved
    sample input): the output, logs, status and duration of one run."""
    body = await _body(request)
    current = await _read_bot(request)
    if "input" in body:
        media = _text(body, "content_type")
        value = parse_sample(_text(body, "input"), media)
    else:
        sample = sample_of(current.content or {})
        media = sample["content_type"] if sample else "application/json"
        value = parse_sample(sample["text"], media) if sample else None
    ran = await run_bot(
        request,
        current.id,
        value,
        media,
        subtype="bot-run",
        description=f"ran Bot/{current.id} with a sample input ({media})",
    )
    return web.json_response(ran)


async def bots_page(request: web.Request) -> web.Response:
    """The list of Bots (``?partial=rows`` renders only its rows, for the refresh)."""
    values = {"nav": "bots", "bots": await bot_summaries(request), "ranges": list(RANGES)}
    if request.query.get("partial") == "rows":
        return render("_bot_rows.html", request, values)
    return render("bots.html", request, values)


async def bot_page(request: web.Request) -> web.Response:
    """One Bot: editor, sample input and runs, history, recording."""
    detail = await bot_detail(request)
    values = {
        "nav": "bots",
        "bot": detail,
        "sample_types": SAMPLE_TYPES,
        "recordings": get_args(ExecutionRecording),
        "executions_url": f"/dashboard/executions?bot={bot_reference(detail['id'])}",
        "deploy_url": f"{API_PATH}/Bot/{detail['id']}/$deploy",
    }
    return render("bot.html", request, values)


def routes() -> list[web.RouteDef]:
    """Routes of the Bots view."""
    return [
        web.get("/bots", bots_page),
        web.get("/bots/{id}", bot_page),
        web.get("/api/bots", bots_json),
        web.get("/api/bots/{id}", bot_json),
        web.post("/api/bots/{id}/check", check),
        web.get("/api/bots/{id}/history", history),
        web.get("/api/bots/{id}/history/{version}", version),
        web.post("/api/bots/{id}/rollback", rollback),
        web.put("/api/bots/{id}/sample", save_sample),
        web.put("/api/bots/{id}/recording", save_recording),
        web.post("/api/bots/{id}/run", run),
    ]
