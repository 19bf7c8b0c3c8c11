"""Fixtures of the search tests: Synthea resources and a fixed "now"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SAMPLE_BUNDLES = 3
"""Synthea bundles the unit tests read (a few hundred resources keep them fast)."""


@pytest.fixture(scope="session")
def synthea_resources(shared_dir: Path) -> list[dict[str, Any]]:
    """Resources of the first few Synthea bundles."""
    files = sorted((shared_dir / "fhir-samples" / "synthea-r4").glob("*.json"))[:SAMPLE_BUNDLES]
    resources: list[dict[str, Any]] = []
    for path in files:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        resources.extend(entry["resource"] for entry in bundle["entry"])
    return resources


@pytest.fixture(scope="session")
def hl7_examples(shared_dir: Path) -> list[dict[str, Any]]:
    """The HL7 R4 example resources."""
    folder = shared_dir / "fhir-samples" / "hl7-r4-examples"
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
