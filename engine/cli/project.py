"""``fhirbots project create|list``: projects, through the admin API.

Client commands for the engine's operator (``--url`` / ``FHIRBOTS_URL``, the admin key in
``FHIRBOTS_TOKEN``); they call ``/admin/projects``
(:mod:`fhirbots.engine.operations.admin`). ``project create NAME`` prints the project and, as
its last line, the secret of its first API key (a project key, unscoped; shown once).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fhirbots.engine.cli.client import ClientError, FhirClient
from fhirbots.engine.cli.key import admin_settings

__all__ = ["add_commands"]


async def _create(args: argparse.Namespace) -> int:
    body = {"id": args.name, "name": args.title or args.name}
    async with FhirClient(admin_settings(args.url)) as client:
        try:
            answer = await client.request("POST", "admin/projects", body)
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    project, key = answer["project"], answer["key"]
    print(f"project {project['id']} ({project['name']}) created; its first key {key['id']}:")
    print(key["secret"])
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with FhirClient(admin_settings(args.url)) as client:
        try:
            answer = await client.request("GET", "admin/projects")
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"{'ID':<24}  {'CREATED':<32}  NAME")
    for project in answer["projects"]:
        print(f"{project['id']:<24}  {project['created']:<32}  {project['name']}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``project create|list`` to the ``fhirbots`` parser."""
    project = subparsers.add_parser("project", help="projects (/admin/projects)")
    commands = project.add_subparsers(dest="project_command", required=True)
    create = commands.add_parser("create", help="a new project; its first key is the last line")
    create.add_argument("name", help="the project's id (letters, digits, '-', '.')")
    create.add_argument("--title", help="a display name (default: the id)")
    create.set_defaults(run=_create)
    listing = commands.add_parser("list", help="the projects")
    listing.set_defaults(run=_list)
    for command in (create, listing):
        command.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
