"""``fhirbots bot deploy|run``: ship a bot to a server, or try one out without deploying.

* ``bot deploy FILE --name NAME``: creates the Bot called NAME with the source in FILE, or
  deploys the source as a new version of the existing one (``Bot/{id}/$deploy``). A refused
  source prints each problem as ``FILE:line:column: message``. The last line printed is the
  bot's reference, ``Bot/<id>``, for scripts.
* ``bot run FILE --input INPUT``: runs the source in FILE once on INPUT (a JSON file, or text
  such as an HL7 v2 message) in the sandbox, without deploying it. Its FHIR calls go to the
  embedded engine in ``--data-dir`` (project ``--project``), or to the server at ``--url``
  with ``FHIRBOTS_TOKEN``, under the sandbox limits of the ``FHIRBOTS_BOT_*`` variables. The
  output is printed as JSON on stdout, the logs on stderr; the exit status is 0 on success, 1
  when the bot failed, 2 when its source or a setting is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from fhirbots.bots.compile import compile_bot
from fhirbots.bots.errors import BotCompileError
from fhirbots.bots.executor import ExecutionRequest, ExecutionResult, ProcessBotExecutor
from fhirbots.bots.policy import SandboxPolicy
from fhirbots.bots.testing import make_bot
from fhirbots.engine.automation.loaded import LoadedBot
from fhirbots.engine.cli.client import ClientError, FhirClient, client_settings
from fhirbots.engine.cli.remote import HttpFhirGateway
from fhirbots.engine.observability.logs import configure_logging
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings

__all__ = ["add_commands", "read_input_file"]

RUN_LOG_LEVEL = "WARNING"
"""``bot run`` keeps stdout for the bot's output and stderr for its logs and real problems."""

HL7V2_MEDIA = "x-application/hl7-v2+er7"
"""Media type given to a bot whose input file is an HL7 v2 message (starts with ``MSH|``)."""


def read_input_file(path: Path, content_type: str | None = None) -> tuple[Any, str]:
    """A bot input from a file, and its media type.

    JSON files (``.json`` or content that parses) give a value (``application/fhir+json`` when
    it is a resource); anything else is text (HL7 v2 when it starts with ``MSH|``, segment
    ends normalised to ``\\r``).
    """
    raw = path.read_bytes()
    try:
        value: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if path.suffix == ".json":
            raise
        text = raw.decode("utf-8")
        if text.startswith("MSH|"):
            segments = [s for s in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if s]
            return "\r".join(segments), content_type or HL7V2_MEDIA
        return text, content_type or "text/plain"
    is_resource = isinstance(value, dict) and "resourceType" in value
    return value, content_type or ("application/fhir+json" if is_resource else "application/json")


def _source(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _problems(path: str, exc: BotCompileError) -> None:
    for problem in exc.problems:
        print(f"{path}:{problem.line}:{problem.column + 1}: {problem.message}", file=sys.stderr)


def _outcome_text(exc: ClientError) -> list[str]:
    outcome = exc.outcome
    if isinstance(outcome, dict) and outcome.get("resourceType") == "OperationOutcome":
        return [str(i.get("diagnostics", i.get("code"))) for i in outcome.get("issue", [])]
    return [str(exc)]


async def _find_bot(client: FhirClient, name: str) -> dict[str, Any] | None:
    bundle = await client.request("GET", f"Bot?name:exact={name}&_count=2")
    found = [e["resource"] for e in (bundle or {}).get("entry", []) if "resource" in e]
    exact = [bot for bot in found if bot.get("name") == name]
    if len(exact) > 1:
        raise ClientError(409, f"several Bots are named {name!r}")
    return exact[0] if exact else None


async def _deploy(args: argparse.Namespace) -> int:
    source = _source(args.file)
    try:
        compile_bot(source)
    except BotCompileError as exc:
        _problems(args.file, exc)
        return 2
    async with FhirClient(client_settings(args.url)) as client:
        try:
            existing = await _find_bot(client, args.name)
            if existing is None:
                body: dict[str, Any] = {"resourceType": "Bot", "name": args.name, "code": source}
                if args.description:
                    body["description"] = args.description
                bot = await client.request("POST", "Bot", body)
                print(f"created {args.name} (version {bot['meta']['versionId']})")
            elif existing.get("code") == source:
                bot = existing
                version = bot["meta"]["versionId"]
                print(f"unchanged {args.name} (version {version}): the source is already deployed")
            else:
                parameters = {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "code", "valueString": source}],
                }
                bot = await client.request("POST", f"Bot/{existing['id']}/$deploy", parameters)
                print(f"deployed {args.name} (version {bot['meta']['versionId']})")
        except ClientError as exc:
            for line in _outcome_text(exc):
                print(f"{args.file}: {line}", file=sys.stderr)
            return 1
    print(f"Bot/{bot['id']}")
    return 0


def _report(result: ExecutionResult) -> int:
    if result.logs:
        sys.stderr.write(result.logs if result.logs.endswith("\n") else result.logs + "\n")
    if not result.ok:
        print(f"bot {result.status}: {result.error}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(result.output, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


async def _run_remote(
    args: argparse.Namespace, request: ExecutionRequest, policy: SandboxPolicy
) -> ExecutionResult:
    async with (
        FhirClient(client_settings(args.url)) as client,
        ProcessBotExecutor(HttpFhirGateway(client), policy) as executor,
    ):
        return await executor.execute(request)


async def _run_embedded(
    args: argparse.Namespace,
    request: ExecutionRequest,
    settings: Settings,
    policy: SandboxPolicy,
) -> ExecutionResult:
    engine = Engine(settings, policy=policy)
    await engine.open()
    try:
        await engine.storage.ensure_project(args.project, args.project)
        prepared = await engine.bots.request(
            LoadedBot(request.bot, "local"),
            args.project,
            request.input,
            content_type=request.content_type,
            requester="cli",
        )
        return await engine.bots.executor.execute(prepared)
    finally:
        await engine.close()


async def _run(args: argparse.Namespace) -> int:
    configure_logging(RUN_LOG_LEVEL, json=False)
    try:
        settings = Settings.from_env().with_overrides(data_dir=args.data_dir)
        # One execution needs one worker, whatever the engine's pool size.
        policy = settings.sandbox_policy().with_pool_size(1)
    except ValueError as exc:  # an unparsable value, or the policy's PolicyError
        print(f"fhirbots: {exc}", file=sys.stderr)
        return 2
    source = _source(args.file)
    try:
        compile_bot(source, policy)
    except BotCompileError as exc:
        _problems(args.file, exc)
        return 2
    value, media = (None, "application/json")
    if args.input:
        value, media = read_input_file(Path(args.input), args.content_type)
    bot = make_bot(source, name=Path(args.file).stem)
    request = ExecutionRequest(bot=bot, input=value, content_type=media, project=args.project)
    if args.url:
        result = await _run_remote(args, request, policy)
    else:
        result = await _run_embedded(args, request, settings, policy)
    return _report(result)


def add_commands(sub: Any) -> None:
    """Add ``bot deploy`` and ``bot run`` to the ``fhirbots`` parser's subcommands."""
    bot = sub.add_parser("bot", help="deploy bots, or run one locally")
    commands = bot.add_subparsers(dest="bot_command", required=True)

    deploy = commands.add_parser("deploy", help="create or update a Bot from a source file")
    deploy.add_argument("file", help="the bot's Python source")
    deploy.add_argument("--name", required=True, help="the Bot's name (found or created)")
    deploy.add_argument("--description", help="description of a new Bot")
    deploy.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
    deploy.set_defaults(run=_deploy)

    run = commands.add_parser("run", help="run a bot once without deploying it")
    run.add_argument("file", help="the bot's Python source")
    run.add_argument("--input", help="input file: JSON, or text such as an HL7 v2 message")
    run.add_argument("--content-type", help="media type of the input (guessed otherwise)")
    run.add_argument("--url", help="run against this server instead of the embedded engine")
    run.add_argument("--data-dir", type=Path, help="embedded engine's data dir")
    run.add_argument("--project", default="default", help="project of the embedded engine")
    run.set_defaults(run=_run)
