"""``fhirbots subscription explain|apply`` and ``fhirbots match``.

* ``subscription explain FILE``: posts the resource in FILE (optionally ``--previous`` and
  ``--interaction``) to ``Subscription/$explain`` and prints, per subscription, whether it
  would fire and, if not, which criterion failed with what values.
* ``subscription apply PATH``: creates or updates the Subscriptions and SubscriptionTopics in
  a JSON file or folder (resources, arrays or Bundles), topics first, and reports what it
  created, changed, left unchanged or the server refused. A resource is matched by its
  identifier: ``id`` if given, else ``SubscriptionTopic.identifier`` (or ``url``), else the
  :data:`IDENTIFIER_EXTENSION` on a Subscription (R4 Subscriptions have no ``identifier``);
  the server id is derived from it, so applying the same files twice changes nothing.
* ``match``: offline, for scripts: JSON Lines on stdin, each ``{"criteria": ..., "resource":
  ...}`` or ``{"fhirpath": ..., "resource": ..., "previous": ...}``; one line out per line in,
  ``{"match": true|false}`` or ``{"error": "..."}``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from fhirbots.engine.cli.client import ClientError, FhirClient, client_settings
from fhirbots.subscriptions.definitions import parse_criterion
from fhirbots.subscriptions.errors import SubscriptionError
from fhirbots.subscriptions.fhirpath import fhirpath_holds
from fhirbots.subscriptions.search import matches

__all__ = ["IDENTIFIER_EXTENSION", "add_commands", "match_line", "match_stream"]

IDENTIFIER_EXTENSION = "https://fhirbots.dev/fhir/StructureDefinition/subscription-identifier"
"""Extension (``valueIdentifier``) naming a Subscription for ``subscription apply``."""

APPLY_TYPES = ("SubscriptionTopic", "Subscription")
"""What ``apply`` writes, in this order: subscriptions may name the topics."""

_IGNORED_WHEN_COMPARING = ("id", "meta", "text")


def match_line(line: str) -> dict[str, Any]:
    """Evaluate one ``fhirbots match`` input line; never raises."""
    try:
        item = orjson.loads(line)
        if not isinstance(item, dict) or not isinstance(item.get("resource"), dict):
            return {"error": "expected an object with a 'resource' object"}
        resource = item["resource"]
        if "criteria" in item:
            criterion = parse_criterion(str(item["criteria"]), "criteria")
            return {"match": matches(criterion.query, resource)}
        if "fhirpath" in item:
            previous = item.get("previous")
            if previous is not None and not isinstance(previous, dict):
                return {"error": "'previous' must be an object or null"}
            return {"match": fhirpath_holds(str(item["fhirpath"]), resource, previous)}
        return {"error": "expected 'criteria' or 'fhirpath'"}
    except orjson.JSONDecodeError as exc:
        return {"error": f"malformed JSON: {exc}"}
    except SubscriptionError as exc:
        return {"error": exc.message}


def match_stream(source: TextIO, sink: TextIO) -> int:
    """Run :func:`match_line` over ``source`` line by line; returns how many lines failed."""
    failed = 0
    for line in source:
        if not line.strip():
            continue
        result = match_line(line)
        failed += "error" in result
        sink.write(orjson.dumps(result).decode() + "\n")
        sink.flush()
    return failed


async def _match(_args: argparse.Namespace) -> int:
    failed = match_stream(sys.stdin, sys.stdout)
    return 1 if failed else 0


def _read(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


async def _explain(args: argparse.Namespace) -> int:
    resource = _read(Path(args.file))
    parameters: list[dict[str, Any]] = []
    if args.interaction == "delete" and not args.previous:
        # A delete has no new version: FILE is the version being deleted.
        parameters.append({"name": "previous", "resource": resource})
    else:
        parameters.append({"name": "resource", "resource": resource})
    if args.previous:
        parameters.append({"name": "previous", "resource": _read(Path(args.previous))})
    if args.interaction:
        parameters.append({"name": "interaction", "valueCode": args.interaction})
    body = {"resourceType": "Parameters", "parameter": parameters}
    async with FhirClient(client_settings(args.url)) as client:
        try:
            answer = await client.request("POST", "Subscription/$explain", body)
        except ClientError as exc:
            print(str(exc), file=sys.stderr)
            return 1
    if args.json:
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        return 0
    for result in answer.get("parameter", []):
        parts: dict[str, list[Any]] = {}
        for part in result.get("part", []):
            value = next((v for k, v in part.items() if k.startswith("value")), None)
            parts.setdefault(part["name"], []).append(value)
        reference = parts["subscription"][0]["reference"]
        status = parts["status"][0]
        if parts["fires"][0]:
            print(f"{reference} ({status}): fires [{'; '.join(parts.get('matched', []))}]")
            continue
        reason = (parts.get("error") or parts.get("failed") or ["?"])[0]
        values = ", ".join(parts.get("value", []))
        print(
            f"{reference} ({status}): does not fire: {reason}" + (f" = {values}" if values else "")
        )
    return 0


def _resources(path: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    for file in files:
        data = _read(file)
        items = data if isinstance(data, list) else [data]
        for item in items:
            if isinstance(item, dict) and item.get("resourceType") == "Bundle":
                items.extend(e.get("resource") for e in item.get("entry") or [])
            elif isinstance(item, dict) and item.get("resourceType") in APPLY_TYPES:
                yield file, item


def match_key(resource: dict[str, Any]) -> str | None:
    """What ``apply`` matches a resource by (see the module docs), or None."""
    identifiers = list(resource.get("identifier") or [])
    for extension in resource.get("extension") or []:
        if extension.get("url") == IDENTIFIER_EXTENSION:
            identifiers.append(extension.get("valueIdentifier") or {})
    for identifier in identifiers:
        if identifier.get("value"):
            return f"{identifier.get('system', '')}|{identifier['value']}"
    url = resource.get("url")
    return f"url|{url}" if url else None


def server_id(resource: dict[str, Any]) -> str | None:
    """The id ``apply`` writes a resource under: its own, or one derived from its key."""
    if resource.get("id"):
        return str(resource["id"])
    key = match_key(resource)
    if key is None:
        return None
    digest = hashlib.sha256(f"{resource['resourceType']}|{key}".encode()).hexdigest()
    return f"apply-{digest[:40]}"


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def strip(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k not in _IGNORED_WHEN_COMPARING}

    return strip(a) == strip(b)


async def _apply_one(client: FhirClient, resource: dict[str, Any]) -> str:
    resource_type = resource["resourceType"]
    resource_id = server_id(resource)
    if resource_id is None:
        return "refused: no id, identifier or url to match it by"
    body = {**resource, "id": resource_id}
    path = f"{resource_type}/{resource_id}"
    existing: Any = None
    try:
        existing = await client.request("GET", path)
    except ClientError as exc:
        if exc.status not in (404, 410):
            raise
    if isinstance(existing, dict) and _same(existing, body):
        return f"unchanged {path}"
    try:
        await client.request("PUT", path, body)
    except ClientError as exc:
        if exc.status in (400, 412, 422):
            return f"refused {path}: {exc}"
        raise
    return f"{'changed' if existing else 'created'} {path}"


async def _apply(args: argparse.Namespace) -> int:
    found = list(_resources(Path(args.path)))
    if not found:
        print(f"no Subscription or SubscriptionTopic at {args.path}", file=sys.stderr)
        return 1
    found.sort(key=lambda item: APPLY_TYPES.index(item[1]["resourceType"]))
    refused = 0
    async with FhirClient(client_settings(args.url)) as client:
        for file, resource in found:
            outcome = await _apply_one(client, resource)
            refused += outcome.startswith("refused")
            print(f"{outcome}  ({file.name})")
    return 1 if refused else 0


def add_commands(subparsers: Any) -> None:
    """Add ``subscription explain|apply`` and ``match`` to the ``fhirbots`` parser."""
    group = subparsers.add_parser("subscription", help="explain and apply Subscriptions")
    commands = group.add_subparsers(dest="subscription_command", required=True)

    explain = commands.add_parser("explain", help="which subscriptions would fire for FILE")
    explain.add_argument("file", help="the resource (JSON)")
    explain.add_argument("--previous", help="its previous version (JSON)")
    explain.add_argument(
        "--interaction", choices=["create", "update", "delete"], help="default: create/update"
    )
    explain.add_argument("--json", action="store_true", help="print the Parameters resource")
    explain.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
    explain.set_defaults(run=_explain)

    apply = commands.add_parser("apply", help="create or update Subscriptions and topics")
    apply.add_argument("path", help="a .json file or a folder of them")
    apply.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
    apply.set_defaults(run=_apply)

    match = subparsers.add_parser("match", help="evaluate criteria on JSON Lines from stdin")
    match.set_defaults(run=_match)
