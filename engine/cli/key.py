"""``fhirbots key create|list|revoke``: a project's API keys, through the admin API.

Client commands for the engine's operator (``--url`` / ``FHIRBOTS_URL``, the admin key in
``FHIRBOTS_TOKEN``); they call ``/admin/keys`` (:mod:`fhirbots.engine.operations.admin`).

``key create --project P`` prints the new key's id and scope, and the secret as its last line
(shown once: only its hash is kept). ``--scope`` limits the key (repeatable; the limits add
up)::

    --scope read-only                      read, vread, search and history only
    --scope types=Patient,Observation      these resource types only
    --scope interactions=read,search,create
                                           these interactions only (read, vread, search,
                                           history, create, update, patch, delete, operation)

``key list [--project P]`` prints id, project, name, scope, created, last used and revoked
(never a secret); ``key revoke ID`` revokes a key: every API process refuses it at once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fhirbots.engine.cli.client import ClientError, ClientSettings, FhirClient, client_settings
from fhirbots.engine.settings import API_PATH

__all__ = [
    "READ_ONLY",
    "add_commands",
    "admin_settings",
    "parse_scopes",
    "print_keys",
    "scope_text",
]

READ_ONLY = ("history", "read", "search", "vread")
"""What ``--scope read-only`` allows (the server's ``READ_ONLY``)."""


def admin_settings(url: str | None) -> ClientSettings:
    """Where the admin API is: the server's root (``--url`` / ``FHIRBOTS_URL`` name the FHIR
    base), with the key in ``FHIRBOTS_TOKEN``."""
    settings = client_settings(url)
    return ClientSettings(settings.url.removesuffix(API_PATH), settings.token)


def parse_scopes(values: list[str]) -> dict[str, list[str]] | None:
    """The admin API's ``scope`` from ``--scope`` values (None: no limit).

    Raises:
        ValueError: a value that is none of the forms.
    """
    types: set[str] | None = None
    interactions: set[str] | None = None
    for value in values:
        name, sep, items = value.partition("=")
        listed = {i.strip() for i in items.split(",") if i.strip()}
        if value == "read-only":
            listed, name, sep = set(READ_ONLY), "interactions", "="
        if not sep or not listed or name not in ("types", "interactions"):
            raise ValueError(
                f"--scope {value!r}: expected read-only, types=T1,T2 or interactions=I1,I2"
            )
        if name == "types":
            types = listed if types is None else types & listed
        else:
            interactions = listed if interactions is None else interactions & listed
    scope: dict[str, list[str]] = {}
    if types is not None:
        scope["resourceTypes"] = sorted(types)
    if interactions is not None:
        scope["interactions"] = sorted(interactions)
    return scope or None


def scope_text(scope: dict[str, list[str]] | None) -> str:
    """A key's scope for a listing: ``all``, or ``types=... interactions=...``."""
    if not scope:
        return "all"
    parts = []
    if "resourceTypes" in scope:
        parts.append("types=" + ",".join(scope["resourceTypes"]))
    if "interactions" in scope:
        parts.append("interactions=" + ",".join(scope["interactions"]))
    return " ".join(parts)


def print_keys(keys: list[dict[str, Any]]) -> None:
    """One line per key: id, project, name, scope, created, last used, revoked."""
    print(
        f"{'ID':<36}  {'PROJECT':<16}  {'NAME':<12}  {'CREATED':<32}  {'LAST USED':<32}  "
        f"{'REVOKED':<32}  SCOPE"
    )
    for key in keys:
        print(
            f"{key['id']:<36}  {key['project']:<16}  {key['name']:<12}  {key['created']:<32}  "
            f"{key['lastUsed'] or '-':<32}  {key['revoked'] or '-':<32}  "
            f"{'admin' if key['admin'] else scope_text(key['scope'])}"
        )


async def _create(args: argparse.Namespace) -> int:
    try:
        scope = parse_scopes(args.scope or [])
    except ValueError as exc:
        print(f"fhirbots: {exc}", file=sys.stderr)
        return 2
    body: dict[str, Any] = {"project": args.project, "name": args.name, "scope": scope}
    async with FhirClient(admin_settings(args.url)) as client:
        try:
            answer = await client.request("POST", "admin/keys", body)
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    key = answer["key"]
    print(f"key {key['id']} of project {key['project']} (scope: {scope_text(key['scope'])})")
    print(key["secret"])
    return 0


async def _list(args: argparse.Namespace) -> int:
    path = "admin/keys" + (f"?project={args.project}" if args.project else "")
    async with FhirClient(admin_settings(args.url)) as client:
        try:
            answer = await client.request("GET", path)
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    print_keys(answer["keys"])
    return 0


async def _revoke(args: argparse.Namespace) -> int:
    async with FhirClient(admin_settings(args.url)) as client:
        try:
            answer = await client.request("POST", f"admin/keys/{args.id}/revoke")
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"key {answer['key']['id']} revoked at {answer['key']['revoked']}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``key create|list|revoke`` to the ``fhirbots`` parser."""
    key = subparsers.add_parser("key", help="API keys of projects (/admin/keys)")
    commands = key.add_subparsers(dest="key_command", required=True)
    create = commands.add_parser("create", help="a new API key; its secret is the last line")
    create.add_argument("--project", required=True, help="the project the key is for")
    create.add_argument("--name", default="key", help="a name for the key (default: key)")
    create.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="read-only, types=T1,T2 or interactions=I1,I2 (repeatable; default: everything "
        "inside the project)",
    )
    create.set_defaults(run=_create)
    listing = commands.add_parser("list", help="the keys (never their secrets)")
    listing.add_argument("--project", help="only this project's keys")
    listing.set_defaults(run=_list)
    revoke = commands.add_parser("revoke", help="revoke a key (refused at once everywhere)")
    revoke.add_argument("id", help="the key's id (fhirbots key list)")
    revoke.set_defaults(run=_revoke)
    for command in (create, listing, revoke):
        command.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
