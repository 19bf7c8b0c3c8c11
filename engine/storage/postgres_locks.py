"""Named locks shared by every process on one PostgreSQL database (session advisory locks).

A conditional write (``If-None-Exist``, ``PUT``/``DELETE`` by search) searches, then writes on
what it found; two of them at once could both find nothing and both create. Holding the lock of
the searched type from the search to the commit makes them take turns, in whichever API process
they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from fhirbots.engine.errors import DatastoreUnavailable
from fhirbots.engine.storage.postgres_pool import DRIVER_ERRORS

__all__ = ["AdvisoryLocks"]

LOCK_POOL_SIZE = 10
"""Connections holding or waiting for locks; a pool of their own, so that waiters never take
the connections the holder needs for its search and its write."""

LOCK_SPACE = 7312
"""Seed of the lock keys' hash, apart from the schema lock (7311)."""


class AdvisoryLocks:
    """``pg_advisory_lock`` on a pool opened at first use."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _connections(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=0, max_size=LOCK_POOL_SIZE
                )
            return self._pool

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        """Hold the lock ``name`` while the block runs (waiting for another holder first).

        Raises:
            DatastoreUnavailable: the lock could not be taken (the block does not run).
        """
        try:
            pool = await self._connections()
            conn = await pool.acquire()
        except DRIVER_ERRORS as exc:
            raise DatastoreUnavailable(
                f"datastore unavailable: {exc or type(exc).__name__}"
            ) from exc
        try:
            try:
                await conn.execute(
                    "SELECT pg_advisory_lock(hashtextextended($1, $2))", name, LOCK_SPACE
                )
            except DRIVER_ERRORS as exc:
                raise DatastoreUnavailable(
                    f"datastore unavailable: {exc or type(exc).__name__}"
                ) from exc
            yield
        finally:
            # Releasing the connection resets it, which ends its advisory locks.
            with contextlib.suppress(*DRIVER_ERRORS):
                await pool.release(conn)

    async def close(self) -> None:
        """Close the pool (the locks its connections held end with them)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
