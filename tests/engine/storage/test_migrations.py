"""Schema migrations on both engines: steps run in order and once, a database of the previous
version is upgraded in place with its rows kept, and a store opened without migrating refuses
missing, old or newer tables, naming ``fhirbots migrate``."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from fhirbots.engine.delivery import store_sql as delivery_sql
from fhirbots.engine.delivery.store_postgres import PostgresDeliveryStore
from fhirbots.engine.delivery.store_sqlite import SqliteDeliveryStore
from fhirbots.engine.storage.migrations import (
    TABLE,
    Migration,
    SchemaHistory,
    SchemaNotMigrated,
    fixed,
    migrate_postgres,
    migrate_sqlite,
    require_current_postgres,
    require_current_sqlite,
    version_postgres,
    version_sqlite,
)
from fhirbots.engine.storage.postgres import PostgresStorage
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.storage.sqlite import SqliteStorage
from tests.conftest import POSTGRES, postgres_dsn, reset_postgres

V1 = Migration(1, "notes", fixed(["CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)"]))
V2 = Migration(
    2,
    "notes get an author; existing ones are the system's",
    fixed(
        [
            "ALTER TABLE notes ADD COLUMN author TEXT",
            "UPDATE notes SET author = 'system'",
        ]
    ),
)
RELEASED = SchemaHistory("example", (V1,))
"""The previous release's migrations."""
NEXT = SchemaHistory("example", (V1, V2))
"""This release's: one step more."""


class Database:
    """One database of either engine, with the calls the tests make on it."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind = kind
        self.location = location

    async def _on(self, work: Callable[[Any], Awaitable[Any]] | Callable[[Any], Any]) -> Any:
        if self.kind == "sqlite":
            with closing(sqlite3.connect(self.location, isolation_level=None)) as conn:
                return work(conn)
        conn = await asyncpg.connect(self.location)
        try:
            return await work(conn)
        finally:
            await conn.close()

    async def migrate(self, history: SchemaHistory) -> list[int]:
        if self.kind == "sqlite":
            steps = await self._on(lambda c: migrate_sqlite(c, history))
        else:
            steps = await self._on(lambda c: migrate_postgres(c, history))
        return [step.version for step in steps]

    async def version(self, history: SchemaHistory) -> int:
        if self.kind == "sqlite":
            return int(await self._on(lambda c: version_sqlite(c, history)))
        return int(await self._on(lambda c: version_postgres(c, history)))

    async def require(self, history: SchemaHistory) -> None:
        if self.kind == "sqlite":
            await self._on(lambda c: require_current_sqlite(c, history))
        else:
            await self._on(lambda c: require_current_postgres(c, history))

    async def rows(self, query: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            return list(await self._on(lambda c: c.execute(query).fetchall()))
        return [tuple(r) for r in await self._on(lambda c: c.fetch(query))]

    async def execute(self, statement: str) -> None:
        if self.kind == "sqlite":
            await self._on(lambda c: c.execute(statement))
        else:
            await self._on(lambda c: c.execute(statement))


@pytest.fixture(params=["sqlite", POSTGRES])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        yield Database("sqlite", str(tmp_path / "store.db"))
        return
    dsn = postgres_dsn()
    await reset_postgres(dsn)
    yield Database("postgres", dsn)


@pytest.fixture
async def released(database: Database) -> Database:
    """A database made by the previous release (version 1), with rows in it."""
    assert await database.migrate(RELEASED) == [1]
    await database.execute("INSERT INTO notes (id, text) VALUES (1, 'kept')")
    return database


async def test_a_new_database_gets_every_step_in_order(database: Database) -> None:
    assert await database.version(NEXT) == 0
    assert await database.migrate(NEXT) == [1, 2]
    assert await database.version(NEXT) == 2
    assert await database.migrate(NEXT) == []  # once only
    recorded = await database.rows(f"SELECT version, summary FROM {TABLE} ORDER BY version")
    assert recorded == [(1, V1.summary), (2, V2.summary)]


async def test_the_previous_version_is_upgraded_in_place(released: Database) -> None:
    with pytest.raises(SchemaNotMigrated, match="at version 1, this fhirbots needs version 2"):
        await released.require(NEXT)
    assert await released.migrate(NEXT) == [2]
    assert await released.rows("SELECT id, text, author FROM notes") == [(1, "kept", "system")]
    await released.require(NEXT)


async def test_a_failing_step_leaves_the_database_as_it_was(released: Database) -> None:
    broken = SchemaHistory(
        "example",
        (
            V1,
            Migration(2, "broken", fixed(["ALTER TABLE notes ADD COLUMN author TEXT", "NOT SQL"])),
        ),
    )
    with pytest.raises(Exception, match="syntax"):
        await released.migrate(broken)
    assert await released.version(NEXT) == 1
    assert await released.migrate(NEXT) == [2]  # the fixed release still upgrades it


async def test_missing_and_newer_schemas_are_refused(database: Database) -> None:
    with pytest.raises(SchemaNotMigrated, match=r"schema is missing.*run `fhirbots migrate`"):
        await database.require(NEXT)
    await database.migrate(NEXT)
    with pytest.raises(SchemaNotMigrated, match="newer than this fhirbots knows"):
        await database.require(RELEASED)
    with pytest.raises(SchemaNotMigrated, match="newer"):
        await database.migrate(RELEASED)


async def test_stores_keep_their_versions_apart(database: Database) -> None:
    other = SchemaHistory("other", (Migration(1, "more", fixed(["CREATE TABLE more (x INT)"])),))
    await database.migrate(NEXT)
    assert await database.version(other) == 0
    assert await database.migrate(other) == [1]
    assert await database.version(NEXT) == 2


def test_steps_must_be_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="numbered 1, 2"):
        SchemaHistory("bad", (V2,))


async def test_stores_opened_without_migrating_need_fhirbots_migrate(
    database: Database, tmp_path: Path
) -> None:
    if database.kind == "sqlite":
        path = Path(database.location)
        store: Any = SqliteStorage(path, indexer=SqlSearchIndexer(), migrate=False)
        delivery: Any = SqliteDeliveryStore(tmp_path / "delivery.db", migrate=False)
    else:
        store = PostgresStorage(database.location, indexer=SqlSearchIndexer(), migrate=False)
        delivery = PostgresDeliveryStore(database.location, migrate=False)
    for refusing in (store, delivery):
        with pytest.raises(SchemaNotMigrated, match="run `fhirbots migrate`"):
            await refusing.open()
    # What `fhirbots migrate` does: open them migrating; then they open without.
    if database.kind == "sqlite":
        migrating: list[Any] = [
            SqliteStorage(Path(database.location), indexer=SqlSearchIndexer()),
            SqliteDeliveryStore(tmp_path / "delivery.db"),
        ]
    else:
        migrating = [
            PostgresStorage(database.location, indexer=SqlSearchIndexer()),
            PostgresDeliveryStore(database.location),
        ]
    for opened in migrating:
        await opened.open()
        await opened.close()
    for refusing in (store, delivery):
        await refusing.open()
        await refusing.close()
    if database.kind == "postgres":
        assert await database.version(delivery_sql.HISTORY) == delivery_sql.HISTORY.latest
