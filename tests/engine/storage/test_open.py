"""PostgreSQL and SQLite open-time settings: schema versions (a database made by another version
is refused, saying what to do) and how PostgreSQL plans searches."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from fhirbots.engine.storage import sql
from fhirbots.engine.storage.migrations import TABLE
from fhirbots.engine.storage.model import CreateOp, WriteContext
from fhirbots.engine.storage.postgres import PostgresStorage
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.storage.sqlite import SqliteStorage
from tests.conftest import postgres_dsn, reset_postgres

CTX = WriteContext(author="ApiKey/k1")


def _as_released_before_migrations(path: Path, user_version: int) -> None:
    """Make an SQLite datastore look like one of the releases before the migrations table:
    the version only in ``PRAGMA user_version``."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"DROP TABLE {TABLE}")
        conn.execute(f"PRAGMA user_version = {user_version}")


async def test_sqlite_refuses_another_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStorage(path, indexer=SqlSearchIndexer())
    await store.open()
    await store.close()
    await store.open()  # its own version: fine
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sql.SCHEMA_VERSION
    _as_released_before_migrations(path, 1)  # the layout before integer index keys
    with pytest.raises(sql.IncompatibleSchema, match="schema version 1, this fhirbots needs"):
        await SqliteStorage(path, indexer=SqlSearchIndexer()).open()


async def test_sqlite_refuses_tables_made_before_versions(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the first schema kept no version
        conn.execute("CREATE TABLE resources (project TEXT, resource_type TEXT, id TEXT)")
    with pytest.raises(sql.IncompatibleSchema, match="schema version 0"):
        await SqliteStorage(path).open()


async def test_sqlite_relay_progress_carries_over_from_per_row_marks(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = SqliteStorage(path)
    await store.open()
    for family in ("A", "B", "C"):
        await store.apply(
            "p1", [CreateOp({"resourceType": "Patient", "name": [{"family": family}]})], CTX
        )
    await store.close()
    _as_released_before_migrations(path, sql.SCHEMA_VERSION)
    with sqlite3.connect(path) as conn:  # as tables from before kept it: a flag per row
        conn.execute("DROP TABLE outbox_published")
        conn.execute("UPDATE outbox SET published = 1 WHERE seq <= 2")
    await store.open()  # migration 1 on the older release's tables carries the marks over
    try:
        assert [r.seq for r in await store.outbox_pending(10)] == [3]
        await store.outbox_mark_published([3])
        assert await store.outbox_pending(10) == []
        # Purging removes published rows older than the cut-off, and only those.
        assert await store.outbox_purge(datetime.now(UTC) + timedelta(seconds=1)) == 3
    finally:
        await store.close()


async def _empty_postgres() -> tuple[str, PostgresStorage]:
    """The test database, emptied, and a storage on it (not open)."""
    dsn = postgres_dsn()
    await reset_postgres(dsn)
    return dsn, PostgresStorage(dsn, indexer=SqlSearchIndexer())


@pytest.mark.integration
async def test_postgres_refuses_another_schema_version() -> None:
    dsn, store = await _empty_postgres()
    await store.open()
    await store.close()
    await store.open()
    await store.close()
    conn = await asyncpg.connect(dsn)
    try:
        # As a release before the migrations table left it, with the layout of version 1.
        await conn.execute(f"DROP TABLE {TABLE}")
        await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await conn.execute("INSERT INTO schema_version VALUES (1)")
    finally:
        await conn.close()
    store = PostgresStorage(dsn, indexer=SqlSearchIndexer())
    with pytest.raises(sql.IncompatibleSchema, match="schema version 1"):
        await store.open()
    await store.close()


@pytest.mark.integration
async def test_postgres_plans_each_search_with_its_values() -> None:
    """Searches run on connections that never switch to a generic plan; writes keep theirs."""
    _, store = await _empty_postgres()
    await store.open()
    try:
        assert await store.search_pool.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        assert await store.pool.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await store.close()
