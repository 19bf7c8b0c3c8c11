"""``fhirbots reindex``: recompute the search index of the project's stored resources.

A client command (``--url`` / ``FHIRBOTS_URL``, key in ``FHIRBOTS_TOKEN``): it starts a job with
``POST [base]/$reindex`` (the types given with ``--type``, or the bases of the project's
SearchParameters) and prints the job; with ``--follow`` it polls the job's status and shows a
progress bar until the job ends (exit status 1 if it failed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from tqdm import tqdm

from fhirbots.engine.cli.client import ClientError, FhirClient, client_settings
from fhirbots.engine.settings import API_PATH

__all__ = ["POLL_SECONDS", "add_commands", "job_fields"]

POLL_SECONDS = 0.5
"""How often ``--follow`` asks for the job's progress."""


def job_fields(parameters: dict[str, Any]) -> dict[str, Any]:
    """A job's ``Parameters`` as a dict of its first values (``types``: every ``type``)."""
    fields: dict[str, Any] = {"types": []}
    for part in parameters.get("parameter") or []:
        value = next((v for k, v in part.items() if k.startswith("value")), None)
        if part.get("name") == "type":
            fields["types"].append(value)
        else:
            fields.setdefault(str(part.get("name")), value)
    return fields


async def _reindex(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        "resourceType": "Parameters",
        "parameter": [{"name": "type", "valueCode": t} for t in args.type or []],
    }
    async with FhirClient(client_settings(args.url)) as client:
        try:
            job = job_fields(await client.request("POST", "$reindex", body))
            print(f"reindex job {job['job']}: {', '.join(job['types'])} ({job['total']} resources)")
            if not args.follow:
                return 0
            with tqdm(total=job["total"], unit="res", file=sys.stderr) as bar:
                while True:
                    job = job_fields(await client.request("GET", f"$reindex/{job['job']}"))
                    bar.update(job["done"] - bar.n)
                    if job["status"] != "running":
                        break
                    await asyncio.sleep(POLL_SECONDS)
        except ClientError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"reindex {job['status']}: {job['done']} of {job['total']} resources")
    if job.get("error"):
        print(job["error"], file=sys.stderr)
    return 0 if job["status"] == "completed" else 1


def add_commands(subparsers: Any) -> None:
    """Add ``reindex`` to the ``fhirbots`` parser."""
    command = subparsers.add_parser(
        "reindex", help=f"recompute the search index of stored resources ({API_PATH}/$reindex)"
    )
    command.add_argument(
        "--type",
        action="append",
        help="a resource type to reindex (repeatable; default: the SearchParameters' bases)",
    )
    command.add_argument("--follow", action="store_true", help="show progress until it ends")
    command.add_argument("--url", help="server base URL (FHIRBOTS_URL)")
    command.set_defaults(run=_reindex)
