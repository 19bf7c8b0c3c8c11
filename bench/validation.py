"""Validation cost per resource, before and after the required-binding check, on one core.

Takes the resources of Synthea bundles and validates each one as a write does, three ways:
the R4B model alone (what validation cost before required bindings were checked), the binding
walk alone (:func:`fhirbots.schemas.bindings.binding_problems`), and the whole of
:func:`fhirbots.schemas.validation.validate_resource` (model, then bindings). Each model is
built once before timing (a worker process does that at start). Prints microseconds per
resource, the best of ``--rounds``.

    python bench/validation.py [--bundles 4] [--rounds 3]
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


def best_per_resource(
    check: Callable[[dict[str, Any]], None], resources: list[dict[str, Any]], rounds: int
) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for resource in resources:
            check(resource)
        best = min(best, time.perf_counter() - started)
    return best / len(resources) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bundles", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    resources = load(args.bundles)
    for resource in resources:  # build every model and binding plan once
        validate_resource(resource)
    print(f"{len(resources)} resources from {args.bundles} Synthea bundles")
    before = best_per_resource(model_only, resources, args.rounds)
    walk = best_per_resource(bindings_only, resources, args.rounds)
    after = best_per_resource(validate_resource, resources, args.rounds)
    print(f"before (R4B model only):       {before:8.1f} us/resource")
    print(f"required bindings walk alone:  {walk:8.1f} us/resource")
    print(f"after (model + bindings):      {after:8.1f} us/resource  (+{after / before - 1:.1%})")


if __name__ == "__main__":
    main()
