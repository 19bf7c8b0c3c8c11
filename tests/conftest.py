"""Shared test helpers: the reference data folder, a PostgreSQL database per test session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def child_env(*first: Path, **extra: str) -> dict[str, str]:
    """The environment of a Python child process a test starts: ``first`` and this checkout
    lead its import path, so that it runs the code under test, not a copy of fhirbots
    installed elsewhere (two checkouts may run their suites side by side)."""
    inherited = os.environ.get("PYTHONPATH", "")
    paths = [*map(str, first), str(REPO_ROOT / "src"), str(REPO_ROOT), inherited]
    return {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def shared_path() -> Path:
    """The shared reference data folder: ``$FHIRBOTS_SHARED`` or ``<repo>/../shared``."""
    return Path(os.environ.get("FHIRBOTS_SHARED", REPO_ROOT / ".." / "shared")).resolve()


_PROCESS_LIMITS = (
    resource.RLIMIT_AS,
    resource.RLIMIT_CPU,
    resource.RLIMIT_NOFILE,
    resource.RLIMIT_NPROC,
    resource.RLIMIT_CORE,
)


@pytest.fixture(autouse=True)
def process_limits_kept() -> Iterator[None]:
    """Every test leaves the test process's resource limits as it found them: sandbox code
    run in-process sets a worker's limits (a 512 MiB address space, a CPU budget) on whatever
    process runs it, and every later test would run under them."""
    before = {kind: resource.getrlimit(kind) for kind in _PROCESS_LIMITS}
    yield
    changed = [kind for kind in _PROCESS_LIMITS if resource.getrlimit(kind) != before[kind]]
    for kind in changed:
        resource.setrlimit(kind, before[kind])
    assert not changed, f"the test changed the process's resource limits {changed}"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared reference data folder (official FHIR definitions, sample bundles)."""
    return shared_path()


PG_DSN_ENV = "FHIRBOTS_TEST_DATABASE_URL"
"""A PostgreSQL server the tests may use (``deploy/postgres/setup.sh`` prints a DSN). Its role
must be allowed to create databases: each test session works in one of its own."""

POSTGRES = pytest.param("postgres", marks=pytest.mark.integration)
"""The PostgreSQL case of a fixture run over every adapter (``params=["sqlite", POSTGRES]``):
it needs a server, so it belongs to the integration tier and a unit run selects none."""

_session_database: list[str] = []
"""The DSN of this session's own database, once made (see :func:`postgres_dsn`)."""


def database_dsn(base: str, database: str) -> str:
    """``base`` with its database name replaced."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to completion from sync code, even inside a running event loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _admin(base: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def postgres_dsn() -> str:
    """A database of this test session's own, made on first use and dropped when the session
    ends, so that two suites on one machine never see each other's tables. CI always sets
    :data:`PG_DSN_ENV`, so PostgreSQL tests never skip there."""
    base = os.environ.get(PG_DSN_ENV)
    if not base:
        if os.environ.get("CI"):
            raise RuntimeError(f"{PG_DSN_ENV} must be set in CI")
        pytest.skip(f"set {PG_DSN_ENV} (run deploy/postgres/setup.sh) for PostgreSQL tests")
    if not _session_database:
        database = f"fhirbots_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        _run(_admin(base, f'CREATE DATABASE "{database}"'))
        _session_database.append(database_dsn(base, database))
    return _session_database[0]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop this session's database (connections left open by a failed test are closed)."""
    base = os.environ.get(PG_DSN_ENV)
    if base and _session_database:
        database = urlsplit(_session_database.pop()).path.lstrip("/")
        _run(_admin(base, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A further database for one module's data (large fixtures), dropped afterwards."""
    base = postgres_dsn()
    database = f"fhirbots_scratch_{uuid.uuid4().hex[:12]}"
    await _admin(base, f'CREATE DATABASE "{database}"')
    try:
        yield database_dsn(base, database)
    finally:
        await _admin(base, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def reset_postgres(dsn: str) -> None:
    """Drop every table of the session's database."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


pytest_plugins = [
    "tests.engine.scenarios.delivery",
    "tests.engine.scenarios.bots",
    "tests.engine.scenarios.dashboard",
    "tests.engine.scenarios.browser",
]
"""Scenario fixtures shared by tests in several folders (a receiver, a dispatcher harness, an
engine with a project), kept in one place."""
