"""Advisory locks on PostgreSQL: a second holder of a name waits for the first, whichever pool
it comes from; other names do not wait."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from fhirbots.engine.storage.postgres_locks import AdvisoryLocks
from tests.conftest import postgres_dsn
from tests.waiting import eventually

pytestmark = pytest.mark.integration


async def waiting_for_advisory_locks(dsn: str) -> int:
    """Advisory locks asked for and not granted in the database of ``dsn``."""
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return count
    finally:
        await conn.close()


async def test_a_second_holder_waits_for_the_first() -> None:
    dsn = postgres_dsn()
    first, second = AdvisoryLocks(dsn), AdvisoryLocks(dsn)
    order: list[str] = []

    async def later() -> None:
        async with second.hold("p1/Patient"):
            order.append("second")

    try:
        async with first.hold("p1/Patient"):
            waiter = asyncio.create_task(later())
            await eventually(lambda: _one_waiting(dsn), "the second holder to wait for the lock")
            async with second.hold("p1/Observation"):
                order.append("other name")
            order.append("first")
        await waiter
    finally:
        await first.close()
        await second.close()
    assert order == ["other name", "first", "second"]


async def _one_waiting(dsn: str) -> bool | None:
    return True if await waiting_for_advisory_locks(dsn) == 1 else None
