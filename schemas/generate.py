"""Generates the JSON Schemas of the topic payloads into ``schemas/json/<topic>.schema.json``.

Run ``python -m fhirbots.schemas.generate`` after changing a payload model and commit the result;
``python -m fhirbots.schemas.generate --check`` exits with status 1 when the files are out of date
(a test does the same check). ``--resource-types`` writes the names of the R4B resource types
(``schemas/json/r4b-resource-types.json``) from the installed fhir.resources models.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fhirbots.schemas import topics
from fhirbots.schemas.deliveries import DeliveryAttemptRecord
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.executions import BotExecutionRecord
from fhirbots.schemas.notifications import Notification
from fhirbots.schemas.subscriptions import SuppressedNotification
from fhirbots.schemas.validation import RESOURCE_TYPES_FILE, r4b_model_types

__all__ = ["JSON_DIR", "JSON_SCHEMA_DIALECT", "PAYLOADS", "main", "render", "schema_for"]

JSON_DIR = Path(__file__).resolve().parent / "json"
"""Where the generated files live (checked in)."""

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
"""The dialect pydantic 2 generates."""

PAYLOADS: Mapping[str, type[BaseModel]] = {
    topics.CHANGES: ChangeEvent,
    topics.NOTIFICATIONS: Notification,
    topics.SUPPRESSED: SuppressedNotification,
    topics.BOT_EXECUTIONS: BotExecutionRecord,
    topics.DELIVERIES: DeliveryAttemptRecord,
}
"""The payload model of each topic (the dead-letter twins carry the same payloads)."""

SUFFIX = ".schema.json"


def schema_for(topic: str, model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of ``model`` as carried on ``topic`` (the JSON a producer writes)."""
    schema = model.model_json_schema(mode="serialization")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"{topic}{SUFFIX}",
        "x-topic": topic,
        **schema,
    }


def render(payloads: Mapping[str, type[BaseModel]] = PAYLOADS) -> dict[str, str]:
    """File name -> file content for every topic payload (stable formatting)."""
    return {
        f"{topic}{SUFFIX}": json.dumps(schema_for(topic, model), indent=2, sort_keys=True) + "\n"
        for topic, model in sorted(payloads.items())
    }


def _differences(target: Path, files: Mapping[str, str]) -> list[str]:
    problems = []
    for name, content in files.items():
        path = target / name
        if not path.exists():
            problems.append(f"missing {name}")
        elif path.read_text(encoding="utf-8") != content:
            problems.append(f"outdated {name}")
    for path in sorted(target.glob(f"*{SUFFIX}")):
        if path.name not in files:
            problems.append(f"stale {path.name}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the schema files; returns the exit status."""
    parser = argparse.ArgumentParser(description="Generate topic payload JSON Schemas.")
    parser.add_argument("--check", action="store_true", help="only report differences")
    parser.add_argument("--out", type=Path, default=JSON_DIR, help="target folder")
    parser.add_argument(
        "--resource-types",
        action="store_true",
        help="write the names of the R4B resource types instead (after a fhir.resources upgrade)",
    )
    args = parser.parse_args(argv)
    if args.resource_types:
        write_resource_types()
        return 0
    files = render()
    problems = _differences(args.out, files)
    if args.check:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.out / name).write_text(content, encoding="utf-8")
    for path in args.out.glob(f"*{SUFFIX}"):
        if path.name not in files:
            path.unlink()
    print(f"wrote {len(files)} schemas to {args.out}")
    return 0


def write_resource_types() -> None:
    """Write the names of the R4B resource types
    (``fhirbots.schemas.validation.R4B_RESOURCE_TYPES``)."""
    types = r4b_model_types()
    RESOURCE_TYPES_FILE.write_text(json.dumps(types, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(types)} resource types to {RESOURCE_TYPES_FILE}")


if __name__ == "__main__":
    sys.exit(main())
