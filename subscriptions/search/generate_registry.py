"""Generate the compact SearchParameter registry from the official R4 definitions.

Usage::

    python -m fhirbots.subscriptions.search.generate_registry path/to/search-parameters.json

reads the official R4 ``SearchParameter`` Bundle and writes
``subscriptions/search/data/search_parameters.json``: one compact entry per parameter with its
code, type, base resource types, FHIRPath expression, targets, modifiers, comparators and
composite components. The registry is never edited by hand; re-run this script instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["OUTPUT_PATH", "SPEC_MODIFIERS", "compact_entry", "generate", "main"]

OUTPUT_PATH = Path(__file__).resolve().parent / "data" / "search_parameters.json"
"""Where the generated registry is written (shipped as package data)."""

# R4 SearchParameter resources rarely fill `modifier`; the spec's table "Modifiers" (search.html
# section 3.1.1.5) defines which ones each parameter type accepts, so that table fills the gap.
SPEC_MODIFIERS: dict[str, tuple[str, ...]] = {
    "string": ("missing", "exact", "contains"),
    "token": ("missing", "text", "not", "above", "below", "in", "not-in", "of-type"),
    "reference": ("missing", "type", "identifier", "above", "below"),
    "date": ("missing",),
    "number": ("missing",),
    "quantity": ("missing",),
    "uri": ("missing", "below", "above"),
    "composite": ("missing",),
    "special": ("missing",),
}


def compact_entry(resource: dict[str, Any]) -> dict[str, Any]:
    """Reduce one SearchParameter resource to the fields the registry needs.

    Args:
        resource: A SearchParameter resource from the official Bundle.

    Returns:
        A JSON-ready dict with the parameter's code, type, bases, expression, targets,
        modifiers, comparators and components.
    """
    ptype = resource["type"]
    return {
        "url": resource["url"],
        "code": resource["code"],
        "type": ptype,
        "base": list(resource.get("base", [])),
        "expression": resource.get("expression"),
        "target": list(resource.get("target", [])),
        "modifier": list(resource.get("modifier") or SPEC_MODIFIERS.get(ptype, ())),
        "comparator": list(resource.get("comparator", [])),
        "component": [
            {"definition": c["definition"], "expression": c["expression"]}
            for c in resource.get("component", [])
        ],
    }


def generate(source: Path, output: Path = OUTPUT_PATH) -> int:
    """Write the compact registry generated from ``source``.

    Args:
        source: Path of the official R4 SearchParameter Bundle (JSON).
        output: Where to write the compact registry.

    Returns:
        The number of parameters written.
    """
    bundle = json.loads(source.read_text(encoding="utf-8"))
    entries = [
        compact_entry(e["resource"])
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") == "SearchParameter"
    ]
    entries.sort(key=lambda e: (e["code"], e["url"]))
    output.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"fhirVersion": "4.0.1", "parameters": entries}, separators=(",", ":"))
    output.write_text(text + "\n", encoding="utf-8")
    return len(entries)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="official R4 search-parameters.json")
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH)
    args = parser.parse_args(argv)
    count = generate(args.source, args.output)
    print(f"wrote {count} search parameters to {args.output}")


if __name__ == "__main__":
    main()
