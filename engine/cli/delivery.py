"""``fhirbots deadletter list|retry|discard`` and ``fhirbots resend``.

Client commands: they call the delivery operations of the server at ``--url`` /
``FHIRBOTS_URL`` with the key in ``FHIRBOTS_TOKEN`` (see ``docs/delivery.md``).

* ``deadletter list [--subscription S] [--json]``: one line per dead letter: id, subscription,
  event number, attempts, focus, last error.
* ``deadletter retry ID... | --subscription S | --all``: back to delivery with their event
  numbers; ``deadletter discard`` takes the same selection and drops them for good.
* ``resend SUBSCRIPTION Type/id``: the resource's current version as a new notification.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import urlencode

from fhirbots.engine.cli.client import ClientError, FhirClient, client_settings

__all__ = ["add_commands"]

DEAD_LETTERS = "Subscription/$dead-letters"


def _parts(parameter: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parameter.get("part", []):
        value = next((v for k, v in part.items() if k.startswith("value")), None)
        if isinstance(value, dict):
            value = value.get("reference")
        out[part["name"]] = value
    return out


async def _list(args: argparse.Namespace) -> int:
    query = {"_count": str(args.count)}
    if args.subscription:
        query["subscription"] = args.subscription
    async with FhirClient(client_settings(args.url)) as client:
        try:
            found = await client.request("GET", f"{DEAD_LETTERS}?{urlencode(query)}")
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    rows = [_parts(p) for p in found.get("parameter", [])]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no dead letters")
    for row in rows:
        print(
            f"{row['id']}  {row['subscription']}  #{row['eventNumber']}  "
            f"attempts={row['attempts']}  {row['focus']}  {row['error']}"
        )
    return 0


def _selection(args: argparse.Namespace) -> list[tuple[str, str]] | None:
    if not (args.ids or args.subscription or args.all):
        return None
    query = [("id", i) for i in args.ids]
    if args.subscription:
        query.append(("subscription", args.subscription))
    return query


async def _change(args: argparse.Namespace, operation: str) -> int:
    query = _selection(args)
    if query is None:
        print("name dead letters by id, or give --subscription or --all", file=sys.stderr)
        return 2
    async with FhirClient(client_settings(args.url)) as client:
        try:
            done = await client.request("POST", f"{DEAD_LETTERS}/{operation}?{urlencode(query)}")
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    count = done["parameter"][0]["valueInteger"]
    verb = "requeued" if operation == "$retry" else "discarded"
    print(f"{verb} {count} dead letter{'s' if count != 1 else ''}")
    return 0


async def _retry(args: argparse.Namespace) -> int:
    return await _change(args, "$retry")


async def _discard(args: argparse.Namespace) -> int:
    return await _change(args, "$discard")


async def _resend(args: argparse.Namespace) -> int:
    path = f"Subscription/{args.subscription}/$resend?{urlencode({'resource': args.resource})}"
    async with FhirClient(client_settings(args.url)) as client:
        try:
            done = await client.request("POST", path)
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    values = {
        p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in done["parameter"]
    }
    number = values["eventNumber"]
    print(f"resent {args.resource} to Subscription/{args.subscription} as event {number}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``deadletter list|retry|discard`` and ``resend`` to the ``fhirbots`` parser."""
    group = subparsers.add_parser("deadletter", help="list, retry or discard dead letters")
    commands = group.add_subparsers(dest="deadletter_command", required=True)

    listing = commands.add_parser("list", help="the project's dead letters")
    listing.add_argument("--subscription", help="only this subscription's")
    listing.add_argument("--count", type=int, default=100, help="at most this many (100)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
    listing.set_defaults(run=_list)

    for name, run, what in (
        ("retry", _retry, "deliver again, with their event numbers"),
        ("discard", _discard, "drop for good"),
    ):
        command = commands.add_parser(name, help=f"dead letters to {what}")
        command.add_argument("ids", nargs="*", help="dead letter ids (from list)")
        command.add_argument("--subscription", help="all of this subscription's")
        command.add_argument("--all", action="store_true", help="all of the project's")
        command.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
        command.set_defaults(run=run)

    resend = subparsers.add_parser("resend", help="send a resource to a subscription again")
    resend.add_argument("subscription", help="subscription id")
    resend.add_argument("resource", help="Type/id of the resource")
    resend.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
    resend.set_defaults(run=_resend)
