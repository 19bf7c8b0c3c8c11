"""A datastore whose database fails: every method of both adapters raises
``DatastoreUnavailable`` (503), the driver's error chained, and never the driver's own error."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from pathlib import Path

import pytest

from fhirbots.engine.errors import DatastoreUnavailable
from fhirbots.engine.storage.model import CreateOp
from fhirbots.engine.storage.postgres import PostgresStorage
from fhirbots.engine.storage.postgres_pool import DRIVER_ERRORS
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.storage.sqlite import SqliteStorage
from tests.conftest import postgres_dsn, reset_postgres
from tests.engine.conftest import open_storage
from tests.engine.scenarios.datastore import CTX, every_call, postgres_down, untranslated

PATIENT = {"resourceType": "Patient", "name": [{"family": "A"}]}


def closed_port() -> int:
    """A local port nothing listens on (it was free a moment ago, and nothing here takes it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_postgres_that_cannot_be_reached_fails_to_open() -> None:
    store = PostgresStorage(f"postgresql://fhirbots@127.0.0.1:{closed_port()}/fhirbots")
    with pytest.raises(DatastoreUnavailable, match="datastore unavailable") as refused:
        await store.open()
    assert isinstance(refused.value.__cause__, OSError)
    assert refused.value.status == 503
    await store.close()


@pytest.mark.integration
async def test_postgres_down_fails_every_method_until_it_is_back() -> None:
    dsn = postgres_dsn()
    await reset_postgres(dsn)
    store = PostgresStorage(dsn, indexer=SqlSearchIndexer())
    await store.open()
    try:
        [created] = await store.apply("p1", [CreateOp(PATIENT)], CTX)
        assert created.stored is not None
        resource_id = created.stored.id
        async with postgres_down(dsn):
            assert await untranslated(every_call(store, resource_id), DRIVER_ERRORS) == {}
        # The pool connects again by itself once the database takes connections.
        read = await store.read("p1", "Patient", resource_id)
        assert read is not None and read.version_id == 1
    finally:
        await store.close()


async def test_sqlite_whose_folder_cannot_be_made_fails_to_open(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the data folder should be")
    store = SqliteStorage(tmp_path / "taken" / "db.sqlite", writer_process=False)
    with pytest.raises(DatastoreUnavailable) as refused:
        await store.open()
    assert isinstance(refused.value.__cause__, OSError)
    await store.close()


@pytest.mark.parametrize("kind", ["sqlite", "sqlite-thread"])
async def test_sqlite_without_its_tables_fails_every_method(kind: str, tmp_path: Path) -> None:
    store = await open_storage(kind, tmp_path)
    try:
        [created] = await store.apply("p1", [CreateOp(PATIENT)], CTX)
        assert created.stored is not None
        with contextlib.closing(sqlite3.connect(tmp_path / "test.db")) as conn:
            tables = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
            for (table,) in tables:
                conn.execute(f'DROP TABLE "{table}"')
        calls = every_call(store, created.stored.id)
        assert await untranslated(calls, (sqlite3.Error, OSError)) == {}
    finally:
        await store.close()
