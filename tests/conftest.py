"""Shared test helpers: where the reference data folder is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    """The shared reference data folder: ``$FHIRBOTS_SHARED`` or ``<repo>/../shared``."""
    return Path(os.environ.get("FHIRBOTS_SHARED", REPO_ROOT / ".." / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared reference data folder (official FHIR definitions, sample bundles)."""
    return shared_path()
