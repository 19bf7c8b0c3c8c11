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


PG_DSN_ENV = "FHIRBOTS_TEST_DATABASE_URL"
"""A PostgreSQL database the tests may wipe (``deploy/postgres/setup.sh`` prints one)."""


def postgres_dsn() -> str:
    """The test database; CI always sets it, so PostgreSQL tests never skip there."""
    dsn = os.environ.get(PG_DSN_ENV)
    if not dsn:
        if os.environ.get("CI"):
            raise RuntimeError(f"{PG_DSN_ENV} must be set in CI")
        pytest.skip(f"set {PG_DSN_ENV} (run deploy/postgres/setup.sh) for PostgreSQL tests")
    return dsn


async def reset_postgres(dsn: str) -> None:
    """Drop every table of the test database."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


pytest_plugins = ["tests.engine.scenarios.delivery", "tests.engine.scenarios.bots"]
"""Scenario fixtures shared by tests in several folders (a receiver, a dispatcher harness, an
engine with a project), kept in one place."""
