"""The ``fhirbots`` command line.

Server commands (``serve``, ``worker``) read settings from flags and ``FHIRBOTS_*`` variables.
Client commands (``load`` and later ones) talk to the server at ``--url`` / ``FHIRBOTS_URL``
with the key in ``FHIRBOTS_TOKEN``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from fhirbots.bots.policy import SandboxPolicy
from fhirbots.engine.cli.backup import add_command as add_backup_command
from fhirbots.engine.cli.bots import add_commands as add_bot_commands
from fhirbots.engine.cli.client import FhirClient, client_settings
from fhirbots.engine.cli.delivery import add_commands as add_delivery_commands
from fhirbots.engine.cli.executions import add_commands as add_execution_commands
from fhirbots.engine.cli.key import add_commands as add_key_commands
from fhirbots.engine.cli.lifecycle import GRACE_EXCEEDED_STATUS, Lifecycle, ListenRefused
from fhirbots.engine.cli.loader import find_files, load_files
from fhirbots.engine.cli.migrate import add_command as add_migrate_command
from fhirbots.engine.cli.project import add_commands as add_project_commands
from fhirbots.engine.cli.reindex import add_commands as add_reindex_commands
from fhirbots.engine.cli.subscriptions import add_commands as add_subscription_commands
from fhirbots.engine.cli.tail import add_commands as add_tail_commands
from fhirbots.engine.cli.tls import api_tls_context
from fhirbots.engine.observability import data_dir
from fhirbots.engine.observability.data_dir import DataDirInUse
from fhirbots.engine.observability.logs import configure_logging
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.migrations import SchemaNotMigrated

__all__ = ["main"]

log = structlog.get_logger(__name__)

INVALID_SETTING_STATUS = 2
"""Exit status of a server command refused by an invalid setting (argparse's for a bad flag)."""

SCHEMA_STATUS = 3
"""Exit status of a server command refused because the schema is missing or old (run
``fhirbots migrate``)."""


IN_USE_STATUS = 4
"""Exit status of a server command refused because its port or its data dir is in use."""


def _own_data_dir(settings: Settings, held: contextlib.ExitStack, *, lock: bool) -> None:
    """Make what this process creates its user's only (umask), the data dir 0700 and its files
    0600, and, with ``lock`` (an embedded engine: its databases live there), hold the data
    dir's lock for the life of the process.

    Raises:
        DataDirInUse: another process holds the lock.
    """
    os.umask(data_dir.UMASK)
    data_dir.secure(settings.data_dir)
    if lock:
        held.enter_context(data_dir.DataDirLock(settings.data_dir))


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().with_overrides(
        data_dir=getattr(args, "data_dir", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        management_port=getattr(args, "management_port", None),
    )


def _configured(args: argparse.Namespace) -> tuple[Settings, SandboxPolicy] | None:
    """The settings of a server command and the bot sandbox policy built from them, or None
    once the reason a value is invalid is printed (a message naming it, not a traceback)."""
    try:
        settings = _settings(args)
        api_tls_context(settings)  # files that do not load are refused before anything starts
        return settings, settings.sandbox_policy()
    except ValueError as exc:  # an unparsable value, or the policy's PolicyError
        print(f"fhirbots: {exc}", file=sys.stderr)
        return None


async def _open(engine: Engine) -> bool:
    """Open the engine's storage; False once a schema refusal is printed (distributed mode
    without ``fhirbots migrate``)."""
    try:
        await engine.open()
    except SchemaNotMigrated as exc:
        print(f"fhirbots: {exc}", file=sys.stderr)
        return False
    return True


async def _serve(args: argparse.Namespace) -> int:
    configured = _configured(args)
    if configured is None:
        return INVALID_SETTING_STATUS
    settings, policy = configured
    configure_logging(settings.log_level)
    embedded = not settings.kafka and not settings.database_url
    with contextlib.ExitStack() as held:
        try:
            _own_data_dir(settings, held, lock=embedded)
        except DataDirInUse as exc:
            print(f"fhirbots: {exc}", file=sys.stderr)
            return IN_USE_STATUS
        try:
            return await _serve_engine(args, settings, policy)
        except ListenRefused as exc:
            print(f"fhirbots: {exc}", file=sys.stderr)
            return IN_USE_STATUS


async def _serve_engine(args: argparse.Namespace, settings: Settings, policy: SandboxPolicy) -> int:
    engine = Engine(settings, policy=policy)
    async with Lifecycle(settings, engine.readiness, "fhirbots-serve") as lifecycle:
        if not await _open(engine):
            return SCHEMA_STATUS
        try:
            engine.validator.warm()
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
            # Requests in flight get half the grace; long-lived ones (live views, websockets)
            # are cancelled then, so the stages keep the other half to finish and commit.
            runner = web.AppRunner(
                engine.app(), access_log=None, shutdown_timeout=settings.shutdown_grace_seconds / 2
            )
            await runner.setup()
            tls = api_tls_context(settings)
            # No reuse_port: a second server on this address must fail, not share its traffic.
            site = web.TCPSite(runner, settings.host, settings.port, ssl_context=tls)
            try:
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                raise ListenRefused(settings.host, settings.port, exc) from exc
            mode = "distributed" if settings.kafka or settings.database_url else "embedded"
            url = settings.base_url()
            if tls is not None and not settings.public_url:
                url = url.replace("http://", "https://", 1)
            print(f"fhirbots serving {url} ({mode})", flush=True)
            log.info("serving", host=settings.host, port=settings.port, mode=mode)
            await lifecycle.run_until_stopped()
            deadline = lifecycle.deadline()
            # Stop accepting at once; requests in flight get until the deadline.
            http_done = await lifecycle.within(deadline, runner.cleanup(), "http")
        except BaseException:
            await engine.close()
            raise
        closed = await lifecycle.within(deadline, engine.close(), "engine")
    log.info("stopped", within_grace=http_done and closed)
    return 0 if http_done and closed else GRACE_EXCEEDED_STATUS


async def _worker(args: argparse.Namespace) -> int:
    configured = _configured(args)
    if configured is None:
        return INVALID_SETTING_STATUS
    settings, policy = configured
    configure_logging(settings.log_level)
    with contextlib.ExitStack() as held:
        _own_data_dir(settings, held, lock=False)  # stages on one data dir share it
    try:
        return await _run_worker(args, settings, policy)
    except ListenRefused as exc:
        print(f"fhirbots: {exc}", file=sys.stderr)
        return IN_USE_STATUS


async def _run_worker(args: argparse.Namespace, settings: Settings, policy: SandboxPolicy) -> int:
    engine = Engine(settings, policy=policy)
    async with Lifecycle(settings, engine.readiness, f"fhirbots-{args.role}") as lifecycle:
        if not await _open(engine):
            return SCHEMA_STATUS
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
                engine.readiness.running()
                await engine.run_stats_app()  # a faust app: it stops on SIGTERM itself
                await engine.close()
                return 0
            elif args.role == "stats":
                await engine.start_stats()
            log.info("worker started", role=args.role)
            await lifecycle.run_until_stopped()
            deadline = lifecycle.deadline()
        except BaseException:
            await engine.close()
            raise
        closed = await lifecycle.within(deadline, engine.close(), "engine")
    log.info("worker stopped", role=args.role, within_grace=closed)
    return 0 if closed else GRACE_EXCEEDED_STATUS


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

    def management_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--management-port",
            type=int,
            help="serve /livez, /readyz and /metrics on this port (FHIRBOTS_MANAGEMENT_PORT)",
        )

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
    management_flag(serve)
    serve.set_defaults(run=_serve)

    worker = sub.add_parser("worker", help="run one stage of the distributed mode")
    server_flags(worker)
    management_flag(worker)
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
    add_migrate_command(sub)
    add_backup_command(sub)
    add_subscription_commands(sub)
    add_delivery_commands(sub)
    add_bot_commands(sub)
    add_tail_commands(sub)
    add_execution_commands(sub)
    add_reindex_commands(sub)
    add_project_commands(sub)
    add_key_commands(sub)
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
