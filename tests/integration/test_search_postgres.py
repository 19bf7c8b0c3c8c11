"""The SQL search cases of ``tests/engine/storage/test_search_index.py``, on PostgreSQL.

Same resources, same searches, same expected ids and order: the SQL the index compiles for
PostgreSQL (``ANY(ARRAY(...))`` membership, ``COLLATE "C"`` sorts, multi-table DELETE) must
behave like the SQLite SQL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from fhirbots.engine.storage import sql
from fhirbots.engine.storage.model import IndexOwner
from fhirbots.engine.storage.search_index import (
    SqlSearchIndexer,
    compile_count,
    compile_search,
    index_ddl,
)
from fhirbots.subscriptions.search import parse_search
from tests.conftest import scratch_database
from tests.engine.storage.test_search_index import PROJECT, RESOURCES, SEARCH_CASES

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


async def _store(
    conn: asyncpg.Connection, resource: dict[str, Any] | None, rtype: str, rid: str
) -> None:
    keys = await conn.fetchrow(
        sql.numbered(sql.UPSERT_CURRENT),
        PROJECT,
        rtype,
        rid,
        1,
        datetime.now(UTC),
        resource is None,
        json.dumps(resource),
    )
    owner = IndexOwner(keys[0], keys[1], rtype)
    for statement, rows in SqlSearchIndexer().statements("postgres", owner, resource):
        await conn.executemany(sql.numbered(statement), rows)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def conn() -> AsyncIterator[asyncpg.Connection]:
    """A connection to a database of its own, with the core schema, index and RESOURCES."""
    async with scratch_database() as dsn:
        connection = await asyncpg.connect(dsn)
        try:
            for statement in [*sql.schema("postgres"), *index_ddl("postgres")]:
                await connection.execute(statement)
            await connection.execute(
                sql.numbered(sql.INSERT_PROJECT), PROJECT, PROJECT, datetime.now(UTC)
            )
            for resource in RESOURCES:
                await _store(connection, resource, resource["resourceType"], resource["id"])
            yield connection
        finally:
            await connection.close()


async def ids(conn: asyncpg.Connection, search: str) -> list[str]:
    text, params = compile_search(parse_search(search).query, project=PROJECT, dialect="postgres")
    return [row["id"] for row in await conn.fetch(sql.numbered(text), *params)]


@pytest.mark.parametrize(("search", "expected"), SEARCH_CASES)
async def test_search(conn: asyncpg.Connection, search: str, expected: list[str]) -> None:
    assert await ids(conn, search) == expected


async def test_sort_paging_and_count(conn: asyncpg.Connection) -> None:
    assert await ids(conn, "Patient?_sort=family") == ["pat-c", "pat-a", "pat-b"]
    assert await ids(conn, "Patient?_sort=birthdate") == ["pat-b", "pat-a", "pat-c"]
    assert await ids(conn, "Patient?_count=2&_offset=2") == ["pat-c"]
    assert await ids(conn, "Patient?_offset=1") == ["pat-b", "pat-c"]
    assert await ids(conn, "_id=obs-1,pat-a") == ["obs-1", "pat-a"]
    text, params = compile_count(
        parse_search("Patient?gender=female").query, project=PROJECT, dialect="postgres"
    )
    assert await conn.fetchval(sql.numbered(text), *params) == 2


async def test_delete_removes_index_rows(conn: asyncpg.Connection) -> None:
    vs = RESOURCES[-1]
    await _store(conn, None, "ValueSet", vs["id"])
    owned = "SELECT COUNT(*) FROM search_uri s JOIN resources r ON r.key = s.res WHERE r.id = $1"
    assert await conn.fetchval(owned, "vs-1") == 0
    await _store(conn, vs, "ValueSet", vs["id"])
    assert await ids(conn, "ValueSet?url=http://acme.org/fhir/ValueSet/123") == ["vs-1"]
    assert await conn.fetchval(owned, "vs-1") > 0
