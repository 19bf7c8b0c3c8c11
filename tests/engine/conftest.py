"""Fixtures of the engine tests: a storage of each kind, an engine, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.port import Storage
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from tests.conftest import POSTGRES, postgres_dsn, reset_postgres


async def open_storage(kind: str, tmp_path: Path) -> Storage:
    """A fresh, open storage of ``kind`` (sqlite, sqlite-thread or postgres), empty."""
    if kind.startswith("sqlite"):
        from fhirbots.engine.storage.sqlite import SqliteStorage

        storage: Storage = SqliteStorage(
            tmp_path / "test.db",
            indexer=SqlSearchIndexer(),
            writer_process=kind != "sqlite-thread",
        )
    else:
        from fhirbots.engine.storage.postgres import PostgresStorage

        dsn = postgres_dsn()
        await reset_postgres(dsn)
        storage = PostgresStorage(dsn, indexer=SqlSearchIndexer())
    await storage.open()
    return storage


@pytest.fixture(params=["sqlite", "sqlite-thread", POSTGRES])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """Each storage adapter in turn (SQLite with its writer in a process, and on a thread)."""
    opened = await open_storage(request.param, tmp_path)
    yield opened
    await opened.close()


class Api:
    """An HTTP client on a running engine, with the admin key of a project."""

    def __init__(
        self, client: TestClient[web.Request, web.Application], engine: Engine, token: str
    ) -> None:
        self.client = client
        self.engine = engine
        self.token = token

    def headers(self, token: str | None = None, **extra: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token or self.token}",
            "Content-Type": "application/fhir+json",
            **extra,
        }


@pytest.fixture(params=["sqlite", POSTGRES])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """A served engine on each storage adapter, with a project ``p1`` and its key."""
    storage = await open_storage(request.param, tmp_path)
    engine = Engine(Settings(data_dir=tmp_path), storage=storage)
    token = await engine.create_project("p1", "Project one")
    client = TestClient(TestServer(engine.app()))
    await client.start_server()
    yield Api(client, engine, token)
    await client.close()
    await engine.close()
