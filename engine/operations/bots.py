"""The HTTP side of bots: the ``Bot`` resource type, its write check, ``$deploy``,
``$execute`` and the status of asynchronous executions.

* ``Bot`` is one of the validation facade's custom types (``schemas.validation.CUSTOM_TYPES``),
  so ``POST /fhir/R4/Bot`` works and the CapabilityStatement lists it. Every create or update
  of a Bot compiles its ``code`` under the sandbox policy and parses its ``cronString``; a
  refusal is a 422 OperationOutcome with one issue per problem: ``Bot.code line L, column C:
  message`` (both 1-based).
* ``POST /fhir/R4/Bot/{id}/$deploy`` takes new code (a ``Parameters`` with ``code``, a JSON
  object ``{"code": ...}`` or the source as ``text/x-python`` / ``text/plain``) and stores it
  as a new version of the Bot (checked like any update).
* ``POST|GET /fhir/R4/Bot/{id}/$execute`` runs the bot on the request body (JSON, FHIR JSON,
  text, HL7 v2 text, form data) or the query parameters and answers the output with 200, or an
  OperationOutcome with the error and the logs (400 when the bot raised, 500 when the sandbox
  stopped it). With ``Prefer: respond-async`` it answers 202 with a ``Content-Location``
  status URL, ``GET /fhir/R4/Bot/$job/{job}``, which answers 202 while the bot runs and then
  what the synchronous call would have.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from fhirbots.bots.compile import compile_bot
from fhirbots.bots.cron import CronSchedule
from fhirbots.bots.errors import BotCompileError, CronError, ExecutorError, ProjectBusyError
from fhirbots.engine.automation.runtime import BotRuntime, result_json
from fhirbots.engine.errors import (
    BadRequest,
    Conflict,
    FhirError,
    Issue,
    NotFound,
    Unprocessable,
    UnsupportedMediaType,
)
from fhirbots.engine.fhir.outcome import operation_outcome
from fhirbots.engine.fhir.service import FhirService, WriteCheck
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.web.context import TRACEPARENT_KEY, principal, write_context
from fhirbots.engine.web.http import FHIR_JSON, base_url, fhir_response, prefer, version_headers

__all__ = [
    "DEPLOY_HEADER",
    "EXECUTION_HEADER",
    "JOB_PATH",
    "bot_routes",
    "check_bot",
    "execution_response",
    "install",
    "read_input",
]

JOB_PATH = f"{API_PATH}/Bot/$job/{{job}}"
"""Status URL of an asynchronous ``$execute`` (``$`` cannot start an id, so no clash)."""

EXECUTION_HEADER = "X-Fhirbots-Execution"
"""Response header naming the execution id of a ``$execute``."""

DEPLOY_HEADER = "X-Fhirbots-Deploy"
"""Response header of a ``$deploy``: ``deployed`` (a new version) or ``unchanged`` (the source
is the current version's: nothing is written)."""

JSON_TYPES = frozenset({"application/json", FHIR_JSON})
"""Bodies parsed as JSON and given to the bot as a value."""

HL7V2_TYPES = frozenset({"x-application/hl7-v2+er7", "application/hl7-v2", "application/edi-hl7"})
"""HL7 v2 media types; the message is given to the bot as text (segments split by ``\\r``)."""

FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
"""Form bodies, given to the bot as an object of field values."""

CODE_TYPES = frozenset({"text/x-python", "text/plain", "application/x-python"})
"""``$deploy`` bodies holding the source itself."""

RETRY_AFTER_SECONDS = "1"
"""``Retry-After`` of a job still running: bots usually finish within seconds."""

_FAILURE_STATUS = {"error": 400}
"""HTTP status of a failed execution: 400 when the bot's own code raised, else 500."""


def check_bot(runtime: BotRuntime) -> WriteCheck:
    """The write check of ``Bot``: compile the code, parse the cron expression."""

    async def check(_project: str, resource: dict[str, Any]) -> None:
        try:
            compile_bot(str(resource.get("code") or ""), runtime.policy)
        except BotCompileError as exc:
            issues = tuple(
                Issue(
                    f"Bot.code line {p.line}, column {p.column + 1}: {p.message}",
                    code="invalid",
                    expression=("Bot.code",),
                )
                for p in exc.problems
            )
            raise Unprocessable(str(exc), issues=issues) from exc
        cron = resource.get("cronString")
        if isinstance(cron, str):
            try:
                CronSchedule.parse(cron)
            except CronError as exc:
                raise Unprocessable(
                    str(exc), issues=(Issue(str(exc), expression=("Bot.cronString",)),)
                ) from exc

    return check


def _form_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    file = getattr(value, "file", None)
    if file is not None:
        data = file.read()
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    return str(value)


def _pairs_to_object(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            previous = out[key]
            out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[key] = value
    return out


async def read_input(request: web.Request) -> tuple[Any, str]:
    """The bot's input and its media type, from the query (GET) or the body (POST).

    Raises:
        BadRequest: malformed JSON.
        UnsupportedMediaType: a body type the engine does not pass to bots.
    """
    if request.method == "GET":
        pairs = list(request.query.items())
        return _pairs_to_object(pairs), "application/x-www-form-urlencoded"
    media = request.content_type
    if media in FORM_TYPES:
        form = await request.post()
        return _pairs_to_object([(k, _form_value(v)) for k, v in form.items()]), media
    body = await request.read()
    if media in JSON_TYPES:
        if not body:
            return None, media
        try:
            return orjson.loads(body), media
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"malformed JSON: {exc}") from exc
    if media in HL7V2_TYPES or media.startswith("text/"):
        return body.decode(request.charset or "utf-8", "replace"), media
    if not body:
        return None, media
    raise UnsupportedMediaType(
        f"$execute does not take {media!r}: send JSON, FHIR JSON, text, HL7 v2 or form data"
    )


def execution_response(outcome: dict[str, Any]) -> web.Response:
    """The answer of an execution: its output (200), or an OperationOutcome with the logs."""
    status = str(outcome.get("status"))
    headers = {EXECUTION_HEADER: str(outcome.get("executionId", ""))}
    if status != "success":
        issues = [Issue(f"bot execution {status}: {outcome.get('error') or ''}", code="exception")]
        if outcome.get("logs"):
            issues.append(Issue(str(outcome["logs"]), severity="information", code="informational"))
        return fhir_response(
            operation_outcome(issues), status=_FAILURE_STATUS.get(status, 500), headers=headers
        )
    output = outcome.get("output")
    if isinstance(output, str):
        return web.Response(text=output, content_type="text/plain", headers=headers)
    if isinstance(output, dict) and "resourceType" in output:
        return fhir_response(output, headers=headers)
    return web.Response(body=orjson.dumps(output), content_type="application/json", headers=headers)


def _busy(exc: ProjectBusyError) -> web.Response:
    """429: the project runs its share of the bot workers and its queue is full."""
    issue = Issue(str(exc), code="throttled")
    return fhir_response(
        operation_outcome([issue]), status=429, headers={"Retry-After": str(exc.retry_after)}
    )


def _unavailable(exc: ExecutorError) -> FhirError:
    error = FhirError(f"bots cannot run now: {exc}")
    error.status = 503
    return error


async def _code_of(request: web.Request) -> str:
    media = request.content_type
    body = await request.read()
    if media in CODE_TYPES:
        return body.decode(request.charset or "utf-8")
    if media not in JSON_TYPES:
        raise UnsupportedMediaType(
            "$deploy takes a Parameters resource, a JSON object with 'code', or text/x-python"
        )
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc
    if isinstance(parsed, dict) and parsed.get("resourceType") == "Parameters":
        for param in parsed.get("parameter") or []:
            if isinstance(param, dict) and param.get("name") == "code":
                value = param.get("valueString")
                if isinstance(value, str):
                    return value
        raise BadRequest("$deploy: the Parameters need a 'code' parameter with a valueString")
    if isinstance(parsed, dict) and isinstance(parsed.get("code"), str):
        return str(parsed["code"])
    raise BadRequest("$deploy: send the code as Parameters, {'code': ...} or text/x-python")


def bot_routes(runtime: BotRuntime) -> list[web.RouteDef]:
    """The routes of ``$deploy``, ``$execute`` and async job status."""

    async def deploy(request: web.Request) -> web.Response:
        project = principal(request).project
        bot_id = request.match_info["id"]
        code = await _code_of(request)
        current = await runtime.fhir.read(project, "Bot", bot_id)
        assert current.content is not None  # read() refuses deletions
        base = base_url(request)
        if current.content.get("code") == code:
            location = f"{base}/Bot/{bot_id}/_history/{current.version_id}"
            headers = {**version_headers(current, location), DEPLOY_HEADER: "unchanged"}
            return fhir_response(current.content, headers=headers)
        result = await runtime.fhir.update(
            project,
            "Bot",
            bot_id,
            {**current.content, "code": code},
            write_context(request),
            if_match=current.version_id,
        )
        stored = result.stored
        assert stored is not None
        assert stored.content is not None
        location = f"{base}/Bot/{bot_id}/_history/{stored.version_id}"
        headers = {**version_headers(stored, location), DEPLOY_HEADER: "deployed"}
        return fhir_response(stored.content, headers=headers)

    async def execute(request: web.Request) -> web.Response:
        caller = principal(request)
        loaded = await runtime.load(caller.project, request.match_info["id"])
        if loaded.bot.status == "retired":
            raise Conflict(f"{loaded.bot.reference} is retired")
        value, media = await read_input(request)
        execution = await runtime.request(
            loaded,
            caller.project,
            value,
            content_type=media,
            requester=caller.author,
            trace_id=request[TRACEPARENT_KEY],
        )
        try:
            if prefer(request, "respond-async", "absent") != "absent":
                job = await runtime.submit(execution, trigger="execute", bot_version=loaded.version)
                base = base_url(request)
                status_url = f"{base}{JOB_PATH.removeprefix(API_PATH).format(job=job.id)}"
                accepted = Issue(
                    f"{loaded.bot.reference} is running; poll {status_url}",
                    severity="information",
                    code="informational",
                )
                return fhir_response(
                    operation_outcome([accepted]),
                    status=202,
                    headers={
                        "Content-Location": status_url,
                        EXECUTION_HEADER: execution.execution_id,
                    },
                )
            result = await runtime.run(execution, trigger="execute", bot_version=loaded.version)
        except ProjectBusyError as exc:
            return _busy(exc)
        except ExecutorError as exc:
            raise _unavailable(exc) from exc
        return execution_response(result_json(result))

    async def job_status(request: web.Request) -> web.Response:
        job = await runtime.job(principal(request).project, request.match_info["job"])
        if job is None:
            raise NotFound(f"no bot job {request.match_info['job']!r} in this project")
        if job.state != "done" or job.result is None:
            running = Issue(
                f"{job.bot} is still running", severity="information", code="informational"
            )
            return fhir_response(
                operation_outcome([running]),
                status=202,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        return execution_response(job.result)

    return [
        web.get(JOB_PATH, job_status),
        web.post(f"{API_PATH}/Bot/{{id}}/$deploy", deploy),
        web.post(f"{API_PATH}/Bot/{{id}}/$execute", execute),
        web.get(f"{API_PATH}/Bot/{{id}}/$execute", execute),
    ]


def install(runtime: BotRuntime, fhir: FhirService, routes: list[web.RouteDef]) -> None:
    """Add the ``Bot`` write check to ``fhir`` and append the bot routes to ``routes``."""
    fhir.add_write_check("Bot", check_bot(runtime))
    routes.extend(bot_routes(runtime))
