"""The ``fhirbots`` command line.

Server commands (``serve``, ``worker``) read settings from flags and ``FHIRBOTS_*`` variables.
Client commands (``load`` and later ones) talk to the server at ``--url`` / ``FHIRBOTS_URL``
with the key in ``FHIRBOTS_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from fhirbots.bots.policy import SandboxPolicy
from fhirbots.engine.api.server import ApiRunner
from fhirbots.engine.cli.bots import add_commands as add_bot_commands
from fhirbots.engine.cli.client import FhirClient, client_settings
from fhirbots.engine.cli.delivery import add_commands as add_delivery_commands
from fhirbots.engine.cli.executions import add_commands as add_execution_commands
from fhirbots.engine.cli.loader import find_files, load_files
from fhirbots.engine.cli.subscriptions import add_commands as add_subscription_commands
from fhirbots.engine.cli.tail import add_commands as add_tail_commands
from fhirbots.engine.observability.logs import configure_logging
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings

__all__ = ["main"]

log = structlog.get_logger(__name__)

INVALID_SETTING_STATUS = 2
"""Exit status of a server command refused by an invalid setting (argparse's for a bad flag)."""


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_overrides(
        data_dir=getattr(args, "data_dir", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
    )


def _configured(args: argparse.Namespace) -> tuple[Settings, SandboxPolicy] | None:
    """The settings of a server command and the bot sandbox policy built from them, or None
    once the reason a value is invalid is printed (a message naming it, not a traceback)."""
    try:
        settings = _settings(args)
        return settings, settings.sandbox_policy()
    except ValueError as exc:  # an unparsable value, or the policy's PolicyError
        print(f"fhirbots: {exc}", file=sys.stderr)
        return None


async def _serve(args: argparse.Namespace) -> int:
    configured = _configured(args)
    if configured is None:
        return INVALID_SETTING_STATUS
    settings, policy = configured
    configure_logging(settings.log_level)
    engine = Engine(settings, policy=policy)
    await engine.open()
    engine.validator.warm()
    try:
        boot = await engine.bootstrap()
        if boot.token_path is not None:
            print(f"admin API key written to {boot.token_path} (mode 0600)", flush=True)
        await engine.start_relay()
        if args.api_only:
            await engine.start_dispatcher(run=False)  # its API routes; workers deliver
        else:
            await engine.start_matcher()
            await engine.start_dispatcher()
            await engine.start_bots()
            await engine.start_stats()
        runner = ApiRunner(engine.app(), settings)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True)
        await site.start()
        mode = "distributed" if settings.kafka or settings.database_url else "embedded"
        print(f"fhirbots serving {settings.base_url()} ({mode})", flush=True)
        log.info("serving", host=settings.host, port=settings.port, mode=mode)
        await _until_signalled()
        await runner.cleanup()
    finally:
        await engine.close()
    return 0


async def _worker(args: argparse.Namespace) -> int:
    configured = _configured(args)
    if configured is None:
        return INVALID_SETTING_STATUS
    settings, policy = configured
    configure_logging(settings.log_level)
    engine = Engine(settings, policy=policy)
    await engine.open()
    try:
        if args.role == "relay":
            await engine.start_relay()
        elif args.role == "matcher":
            await engine.start_matcher()
        elif args.role == "dispatcher":
            await engine.start_dispatcher()
        elif args.role == "bots":
            await engine.start_bots()
        elif args.role == "stats" and settings.kafka:
            await engine.run_stats_app()  # a faust app: it stops on SIGTERM itself
            return 0
        elif args.role == "stats":
            await engine.start_stats()
        log.info("worker started", role=args.role)
        await _until_signalled()
    finally:
        await engine.close()
    return 0


async def _load(args: argparse.Namespace) -> int:
    files = find_files(Path(args.path))
    if not files:
        print(f"no JSON files at {args.path}", file=sys.stderr)
        return 1
    async with FhirClient(client_settings(args.url)) as client:
        summary = await load_files(client, files, progress=not args.quiet)
    print(f"loaded {summary.files} of {len(files)} files, {summary.total} resources")
    for resource_type, count in sorted(summary.resources.items()):
        print(f"  {resource_type:<28} {count:>8}")
    for path, error in summary.failures:
        print(f"FAILED {path}: {error}", file=sys.stderr)
    return 1 if summary.failures else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fhirbots", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def server_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, help="data directory (FHIRBOTS_DATA_DIR)")

    serve = sub.add_parser("serve", help="run the engine (API, relay, stages) in one process")
    server_flags(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8080)")
    serve.add_argument(
        "--api-only",
        action="store_true",
        help="serve the API and run the outbox relay only; the matcher, dispatcher and bots "
        "run in `fhirbots worker` processes",
    )
    serve.set_defaults(run=_serve)

    worker = sub.add_parser("worker", help="run one stage of the distributed mode")
    server_flags(worker)
    worker.add_argument(
        "role",
        choices=["relay", "matcher", "dispatcher", "bots", "stats"],
        help="which stage to run",
    )
    worker.set_defaults(run=_worker)

    load = sub.add_parser("load", help="load FHIR Bundles from a file or folder")
    load.add_argument("path", help="a .json file or a folder of them")
    load.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.set_defaults(run=_load)
    add_subscription_commands(sub)
    add_delivery_commands(sub)
    add_bot_commands(sub)
    add_tail_commands(sub)
    add_execution_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fhirbots`` command."""
    args = _parser().parse_args(argv)
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = args.run
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
