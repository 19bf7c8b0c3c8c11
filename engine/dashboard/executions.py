"""Bot executions: the list (filtered by bot and outcome), one execution with the writes it
made, running an execution again with the same input; ``/api/executions``.

Everything is read from the observatory store's execution records (kept by the statistics
stage as far as each Bot's ``executionRecording`` asks) and its trace index, never from a topic.
Running a bot from the dashboard (here and on the bot page) goes through the engine's
:class:`fhirbots.engine.automation.runtime.BotRuntime`, like ``$execute``: the run is recorded
like any other, and the action is audited.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from fhirbots.bots.errors import ExecutorError
from fhirbots.bots.executor import ExecutionResult
from fhirbots.engine.dashboard.audit import audit_action
from fhirbots.engine.dashboard.context import caller, deps, render
from fhirbots.engine.dashboard.times import instant
from fhirbots.engine.errors import BadRequest, Conflict, FhirError, NotFound
from fhirbots.engine.observability.tracing import new_traceparent
from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.schemas.executions import BotExecutionRecord

__all__ = [
    "DEFAULT_LIMIT",
    "HL7V2_MEDIA",
    "MAX_LIMIT",
    "OUTCOMES",
    "bot_reference",
    "content_type_of",
    "list_executions",
    "outcome_of",
    "record_json",
    "routes",
    "run_bot",
    "run_json",
]

_MOUNT = "/dashboard"

OUTCOMES: dict[str, tuple[str, ...]] = {
    "ok": ("success",),
    "error": ("error",),
    "timeout": ("timeout",),
    "killed": ("killed", "memory"),
    "refused": ("skipped",),
}
"""Outcome filter -> execution statuses. ``error`` is the bot's own code raising; ``timeout``,
``killed`` (the worker died, or passed its memory limit) are the sandbox stopping it;
``refused`` is the loop guard not running it at all."""

DEFAULT_LIMIT = 50
"""Rows of a page of executions."""

MAX_LIMIT = 500
"""Largest page a client may ask for: records carry their input, output and logs."""

LIST_ERROR_CHARS = 300
"""Characters of an error shown in a list; the execution's own page shows all of it."""

HL7V2_MEDIA = "x-application/hl7-v2+er7"
"""Media type a run again gives to an HL7 v2 message (as ``fhirbots bot run`` does)."""

_STATUS_OUTCOME = {status: name for name, statuses in OUTCOMES.items() for status in statuses}


def outcome_of(status: str) -> str:
    """The outcome filter an execution status falls under (``success`` -> ``ok``)."""
    return _STATUS_OUTCOME.get(status, status)


def bot_reference(bot: str) -> str:
    """``Bot/<id>`` from an id or a reference."""
    return bot if bot.startswith("Bot/") else f"Bot/{bot}"


def record_json(record: BotExecutionRecord, *, full: bool = False) -> dict[str, Any]:
    """An execution record as the JSON API gives it; ``full`` adds input, output and logs."""
    error = record.error
    out: dict[str, Any] = {
        "id": record.execution_id,
        "bot": record.bot,
        "bot_version": record.bot_version,
        "trigger": record.trigger,
        "status": record.status,
        "outcome": outcome_of(record.status),
        "started": instant(record.started),
        "duration_ms": round(record.duration_ms, 3),
        "error": error if full or error is None else error[:LIST_ERROR_CHARS],
        "fhir_calls": record.fhir_calls,
        "requester": record.requester,
    }
    if full:
        out |= {
            "input": record.input,
            "output": record.output,
            "logs": record.logs,
            "trace_id": record.trace_id,
            "idempotency_key": record.idempotency_key,
            "notification_id": record.notification_id,
            "causation": [link.model_dump(mode="json") for link in record.causation],
            "recording": record.recording,
        }
    return out


def run_json(result: ExecutionResult) -> dict[str, Any]:
    """The result of a run started from the dashboard."""
    return {
        "id": result.execution_id,
        "status": result.status,
        "outcome": outcome_of(result.status),
        "output": result.output,
        "logs": result.logs,
        "error": result.error,
        "duration_ms": round(result.duration_ms, 3),
        "fhir_calls": result.fhir_calls,
    }


def content_type_of(value: Any) -> str:
    """The media type to give a recorded input when running it again.

    Records keep the input, not its media type: a resource is FHIR JSON, an HL7 v2 message
    (text starting with ``MSH|``) is HL7 v2, other text is plain text, anything else JSON.
    """
    if isinstance(value, dict) and "resourceType" in value:
        return "application/fhir+json"
    if isinstance(value, str):
        return HL7V2_MEDIA if value.startswith("MSH|") else "text/plain"
    return "application/json"


def _unavailable(exc: ExecutorError) -> FhirError:
    error = FhirError(f"bots cannot run now: {exc}")
    error.status = 503
    return error


async def run_bot(
    request: web.Request,
    bot_id: str,
    value: Any,
    content_type: str,
    *,
    subtype: str,
    description: str,
) -> dict[str, Any]:
    """Run the current version of ``Bot/<bot_id>`` once on ``value``, as ``$execute`` would,
    and audit it (``subtype``, ``description`` followed by how it ended).

    Returns:
        ``{"execution": run_json(...), "bot_version": ...}``.

    Raises:
        NotFound: no such bot in the caller's project.
        Conflict: the bot is retired.
        FhirError: 503 when no sandbox worker can start.
    """
    dashboard = deps(request)
    who = caller(request)
    runtime = dashboard.bots
    loaded = await runtime.load(who.project, bot_id)
    if loaded.bot.status == "retired":
        raise Conflict(f"{loaded.bot.reference} is retired")
    execution = await runtime.request(
        loaded,
        who.project,
        value,
        content_type=content_type,
        requester=who.author,
        # A trace of its own, so the execution page can list the writes of this run.
        trace_id=new_traceparent(),
    )
    try:
        result = await runtime.run(execution, trigger="execute", bot_version=loaded.version)
    except ExecutorError as exc:
        raise _unavailable(exc) from exc
    await audit_action(
        dashboard.fhir,
        who,
        subtype,
        f"{description}: execution {result.execution_id} ended {result.status}",
        entity=loaded.bot.reference,
        success=result.ok,
    )
    return {"execution": run_json(result), "bot_version": loaded.version}


def _limit(text: str | None) -> int:
    if not text:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a number from 1 to {MAX_LIMIT}")
    return int(text)


def _before(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadRequest(f"before must be an ISO 8601 instant, not {text!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _statuses(outcome: str | None) -> tuple[str | None, ...]:
    if not outcome:
        return (None,)
    if outcome not in OUTCOMES:
        raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)}")
    return OUTCOMES[outcome]


async def list_executions(
    store: ObservatoryStore,
    project: str,
    *,
    bot: str | None,
    outcome: str | None,
    before: datetime | None,
    limit: int,
) -> tuple[list[BotExecutionRecord], datetime | None]:
    """A page of a project's execution records, newest first, and the ``before`` of the next
    page (None on the last one).

    Raises:
        BadRequest: an unknown outcome.
    """
    reference = bot_reference(bot) if bot else None
    found: list[BotExecutionRecord] = []
    for status in _statuses(outcome):
        found += await store.executions(
            project, bot=reference, status=status, before=before, limit=limit
        )
    # An outcome of two statuses reads a page of each; their merge keeps the newest.
    found.sort(key=lambda r: (r.started, r.execution_id), reverse=True)
    page = found[:limit]
    following = page[-1].started if len(page) == limit else None
    return page, following


async def _page_of(request: web.Request) -> dict[str, Any]:
    query = request.query
    page, following = await list_executions(
        deps(request).observatory,
        caller(request).project,
        bot=query.get("bot") or None,
        outcome=query.get("outcome") or None,
        before=_before(query.get("before")),
        limit=_limit(query.get("limit")),
    )
    return {
        "executions": [record_json(r) for r in page],
        "next_before": instant(following) if following is not None else None,
    }


async def writes_of(
    store: ObservatoryStore, project: str, execution_id: str
) -> list[dict[str, Any]]:
    """The writes an execution made: the change steps of its trace whose parent it is (as far
    as the statistics stage has consumed them)."""
    trace = await store.trace_of(project, execution_id)
    if trace is None:
        return []
    return [
        {
            "ref": step.ref,
            "at": instant(step.at),
            "resource": step.summary.get("resource"),
            "version": step.summary.get("version"),
            "interaction": step.summary.get("interaction"),
            "trace": f"{_MOUNT}/trace/{step.ref}",
        }
        for step in await store.trace(project, trace)
        if step.kind == "change" and step.parent == execution_id
    ]


async def _record(request: web.Request) -> BotExecutionRecord:
    execution_id = request.match_info["id"]
    record = await deps(request).observatory.execution(caller(request).project, execution_id)
    if record is None:
        raise NotFound(
            f"no execution {execution_id!r} in this project (a run is listed a few seconds "
            "after it ended, and only as far as its bot's executionRecording keeps it)"
        )
    return record


async def _detail(request: web.Request) -> dict[str, Any]:
    record = await _record(request)
    out = record_json(record, full=True)
    out["writes"] = await writes_of(
        deps(request).observatory, caller(request).project, record.execution_id
    )
    out["trace"] = f"{_MOUNT}/trace/{record.execution_id}" if record.trace_id else None
    return out


async def executions_json(request: web.Request) -> web.Response:
    """``GET /api/executions?bot=&outcome=&before=&limit=``."""
    return web.json_response(await _page_of(request))


async def execution_json(request: web.Request) -> web.Response:
    """``GET /api/executions/{id}``: the record, with input, output, logs and writes."""
    return web.json_response(await _detail(request))


def _rerunnable(record: BotExecutionRecord) -> Any:
    """The input of ``record`` to run again (refused when the record did not keep it)."""
    value = record.input
    if isinstance(value, dict) and "fhirbotsNote" in value:
        raise Conflict(f"execution {record.execution_id} did not keep its input: {value}")
    return value


async def rerun(request: web.Request) -> web.Response:
    """``POST /api/executions/{id}/$rerun``: the bot's current version on the same input."""
    record = await _record(request)
    value = _rerunnable(record)
    ran = await run_bot(
        request,
        record.bot.removeprefix("Bot/"),
        value,
        content_type_of(value),
        subtype="bot-rerun",
        description=f"ran {record.bot} again with the input of execution {record.execution_id}",
    )
    return web.json_response({**ran, "rerun_of": record.execution_id})


async def executions_page(request: web.Request) -> web.Response:
    """The list, filtered by bot and outcome (``?partial=rows`` renders only its rows)."""
    listed = await _page_of(request)
    values = {
        "nav": "bots",
        "rows": listed["executions"],
        "next_before": listed["next_before"],
        "bot": request.query.get("bot", ""),
        "outcome": request.query.get("outcome", ""),
        "outcomes": list(OUTCOMES),
    }
    if request.query.get("partial") == "rows":
        return render("_execution_rows.html", request, values)
    return render("executions.html", request, values)


def _shown(value: Any) -> str:
    """A value as a page shows it: text as it is, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


async def execution_page(request: web.Request) -> web.Response:
    """One execution: what it was given, what it answered and logged, what it wrote."""
    detail = await _detail(request)
    values = {
        "nav": "bots",
        "x": detail,
        "input_text": _shown(detail["input"]),
        "output_text": _shown(detail["output"]),
    }
    return render("execution.html", request, values)


def routes() -> list[web.RouteDef]:
    """Routes of the executions view."""
    return [
        web.get("/executions", executions_page),
        web.get("/executions/{id}", execution_page),
        web.get("/api/executions", executions_json),
        web.get("/api/executions/{id}", execution_json),
        web.post("/api/executions/{id}/$rerun", rerun),
    ]
