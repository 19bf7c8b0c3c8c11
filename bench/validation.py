"""Validation cost per resource, before and after the required-binding check, on one core.

Takes the resources of Synthea bundles and validates each one as a write does, three ways:
the R4B model alone (what validation cost before required bindings were checked), the binding
walk alone (:func:`fhirbots.schemas.bindings.binding_problems`), and the whole of
:func:`fhirbots.schemas.validation.validate_resource` (model, then bindings). Each model is
built once before timing (a worker process does that at start). Prints microseconds per
resource, the best of ``--rounds``.

    python bench/validation.py [--bundles 4] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhirbots.schemas.bindings import binding_problems
from fhirbots.schemas.validation import fhir_model, validate_resource

SHARED = Path(os.environ.get("FHIRBOTS_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def load(bundles: int) -> list[dict[str, Any]]:
    files = sorted((SHARED / "fhir-samples" / "synthea-r4").glob("*.json"))[:bundles]
    return [
        entry["resource"]
        for file in files
        for entry in json.loads(file.read_bytes())["entry"]
        if "resource" in entry
    ]


def model_only(resource: dict[str, Any]) -> None:
    model = fhir_model(resource["resourceType"])
    assert model is not None
    model.model_validate(resource)


def bindings_only(resource: dict[str, Any]) -> None:
    assert not binding_problems(resource)


def per_resource(check: Callable[[dict[str, Any]], None], resources: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for resource in resources:
        check(resource)
    return (time.perf_counter() - started) / len(resources) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bundles", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    resources = load(args.bundles)
    for resource in resources:  # build every model and binding plan once
        validate_resource(resource)
    print(f"{len(resources)} resources from {args.bundles} Synthea bundles")
    # The three take turns in every round, so a busy machine slows them alike; best of rounds.
    checks = (model_only, bindings_only, validate_resource)
    rounds = [[per_resource(check, resources) for check in checks] for _ in range(args.rounds)]
    before, walk, after = (min(times) for times in zip(*rounds, strict=True))
    print(f"before (R4B model only):       {before:8.1f} us/resource")
    print(
        f"required bindings walk alone:  {walk:8.1f} us/resource  ({walk / before:.1%} of before)"
    )
    print(f"after (model + bindings):      {after:8.1f} us/resource")


if __name__ == "__main__":
    main()
