"""``fhirbots tail``: the dashboard's live tail in a terminal, one line per event.

A client command: it reads ``/dashboard/api/tail`` (Server-Sent Events) of the server at
``--url`` / ``FHIRBOTS_URL`` with the key in ``FHIRBOTS_TOKEN`` and prints each change event,
notification, delivery attempt and bot execution of the key's project as it happens, until
interrupted (Ctrl-C) or the server goes away::

    fhirbots tail --type Observation --interaction create
    fhirbots tail --kinds delivery,execution --outcome failed
    fhirbots tail --bot 42 --json

Notices (the project tailed, events left out because they came faster than the server sends
them) go to stderr, so stdout holds only events.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TextIO

import aiohttp

from fhirbots.engine.cli.client import client_settings
from fhirbots.engine.settings import API_PATH

__all__ = ["add_commands", "format_event", "tail_url"]

TAIL_PATH = "/dashboard/api/tail"
"""Where the server streams its live tail."""

QUIET_SECONDS = 60.0
"""Seconds without a byte after which the connection counts as lost: the server sends a
comment every 15 seconds when nothing happens."""


def tail_url(url: str) -> str:
    """The tail's URL on the server whose FHIR base (or root) is ``url``."""
    root = url.rstrip("/").removesuffix(API_PATH)
    return root + TAIL_PATH


def _time(text: str) -> str:
    try:
        return datetime.fromisoformat(text).astimezone().strftime("%H:%M:%S.%f")[:-3]
    except (TypeError, ValueError):
        return str(text)


def _what(event: dict[str, Any]) -> str:
    kind = event.get("kind")
    resource = f"{event.get('resource_type')}/{event.get('resource_id')}"
    if kind == "change":
        author = f" by {event['author']}" if event.get("author") else ""
        return f"{event.get('interaction')} {resource} v{event.get('version')}{author}"
    if kind == "notification":
        target = event.get("endpoint") or event.get("channel")
        return f"Subscription/{event.get('subscription')} {resource} -> {target}"
    if kind == "delivery":
        status = f" HTTP {event['status']}" if event.get("status") else ""
        error = f" {event['error']}" if event.get("error") else ""
        return (
            f"Subscription/{event.get('subscription')} attempt {event.get('attempt')} "
            f"{event.get('outcome')}{status} {event.get('duration_ms', 0):.0f} ms{error}"
        )
    if kind == "execution":
        error = f" {event['error']}" if event.get("error") else ""
        return (
            f"{event.get('bot')} {event.get('outcome')} ({event.get('trigger')}) "
            f"{event.get('duration_ms', 0):.0f} ms{error}"
        )
    return json.dumps(event)


def format_event(event: dict[str, Any]) -> str:
    """One line for one event: local time, kind, what happened, the step's id."""
    when = _time(event.get("time", ""))
    return f"{when}  {event.get('kind', '?'):<12}  {_what(event)}  [{event.get('ref')}]"


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of a Server-Sent Events response (comments and retry lines skipped)."""
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line.removeprefix("data:").lstrip(" "))
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


def _query(args: argparse.Namespace) -> dict[str, str]:
    pairs = {
        "kinds": args.kinds,
        "type": args.type,
        "interaction": args.interaction,
        "id": args.id,
        "subscription": args.subscription,
        "bot": args.bot,
        "outcome": args.outcome,
    }
    return {name: value for name, value in pairs.items() if value}


def _notice(event: dict[str, Any], err: TextIO) -> None:
    if event.get("kind") == "ready":
        print(f"tailing project {event.get('project')} (Ctrl-C to stop)", file=err, flush=True)
    elif event.get("kind") == "sampled":
        print(
            f"-- more than {event.get('max_per_second')} events/s: "
            f"{event.get('shown')} of {event.get('matched')} shown",
            file=err,
            flush=True,
        )


async def run_tail(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Print the tail until the stream ends (events to ``out``, notices and errors to
    ``err``); 1 when the server refused or could not be reached, 2 without a key."""
    out = out or sys.stdout
    err = err or sys.stderr
    settings = client_settings(args.url)
    if not settings.token:
        print("set FHIRBOTS_TOKEN to an API key of the project to tail", file=err)
        return 2
    headers = {"Authorization": f"Bearer {settings.token}", "Accept": "text/event-stream"}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=QUIET_SECONDS)
    url = tail_url(settings.url)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, params=_query(args), headers=headers) as response,
        ):
            if response.status >= 400:
                body = await response.text()
                try:
                    message = json.loads(body).get("error", body)
                except ValueError:
                    message = body[:500]
                print(f"HTTP {response.status}: {message}", file=err)
                return 1
            async for event in _events(response):
                if event.get("kind") in ("ready", "sampled"):
                    _notice(event, err)
                elif args.json:
                    print(json.dumps(event), file=out, flush=True)
                else:
                    print(format_event(event), file=out, flush=True)
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"{url}: {exc!r}", file=err)
        return 1
    print("the server ended the stream", file=err)
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``tail`` to the ``fhirbots`` parser."""
    tail = subparsers.add_parser(
        "tail", help="print change events, notifications, deliveries and executions live"
    )
    tail.add_argument("--type", help="resource type, e.g. Observation")
    tail.add_argument("--interaction", choices=["create", "update", "delete"])
    tail.add_argument("--id", help="resource id")
    tail.add_argument("--subscription", help="subscription id")
    tail.add_argument("--bot", help="bot id (or Bot/<id>)")
    tail.add_argument(
        "--outcome", help="delivery outcome or execution status (error, dead, failed, ...)"
    )
    tail.add_argument(
        "--kinds", help="comma-separated: change,notification,delivery,execution (all)"
    )
    tail.add_argument("--json", action="store_true", help="print each event as JSON")
    tail.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
    tail.set_defaults(run=run_tail)
