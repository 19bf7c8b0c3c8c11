"""``fhirbots executions``: the project's bot runs, newest first.

A client command: it reads the dashboard's ``/dashboard/api/executions`` on the server at
``--url`` / ``FHIRBOTS_URL`` with the key in ``FHIRBOTS_TOKEN`` (see ``docs/dashboard.md``),
so it lists what the dashboard lists: the runs each Bot's ``executionRecording`` keeps.

One line per run: start time, bot, outcome, duration and the last line of the error (the
exception, after the bot's traceback)::

    2024-05-01 12:00:03.412  Bot/6f1c...  timeout   5003.1 ms  execution took longer than 5 s
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from fhirbots.engine.cli.client import ClientError, FhirClient, client_settings
from fhirbots.engine.dashboard.executions import DEFAULT_LIMIT, OUTCOMES
from fhirbots.engine.settings import API_PATH

__all__ = ["add_commands", "format_execution", "server_root"]

EXECUTIONS_API = "/dashboard/api/executions"
"""Where the dashboard lists executions, below the server's root."""


def server_root(url: str) -> str:
    """The server's root from the FHIR base URL the client commands take (or the root)."""
    return url.rstrip("/").removesuffix(API_PATH)


def format_execution(row: dict[str, Any]) -> str:
    """One line of the listing."""
    started = str(row.get("started", ""))[:23].replace("T", " ")
    error = [line for line in (row.get("error") or "").splitlines() if line.strip()]
    return (
        f"{started:23}  {row.get('bot')}  {row.get('outcome', row.get('status')):8}  "
        f"{float(row.get('duration_ms') or 0):9.1f} ms  {error[-1].strip() if error else ''}"
    ).rstrip()


async def _list(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    if args.bot:
        query["bot"] = args.bot
    if args.outcome:
        query["outcome"] = args.outcome
    settings = client_settings(args.url)
    async with FhirClient(replace(settings, url=server_root(settings.url))) as client:
        try:
            found = await client.request(
                "GET",
                f"{EXECUTIONS_API}?{urlencode(query)}",
                headers={"Accept": "application/json"},
            )
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    rows: list[dict[str, Any]] = found.get("executions", [])
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no executions")
    for row in rows:
        print(format_execution(row))
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``executions`` to the ``fhirbots`` parser."""
    command = subparsers.add_parser("executions", help="list bot runs, newest first")
    command.add_argument("--bot", help="only this bot's (id or Bot/id)")
    command.add_argument(
        "--outcome",
        choices=list(OUTCOMES),
        help="only runs that ended so (ok, error, timeout, killed, refused)",
    )
    command.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"at most this many ({DEFAULT_LIMIT})"
    )
    command.add_argument("--json", action="store_true", help="print the records as JSON")
    command.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
    command.set_defaults(run=_list)
