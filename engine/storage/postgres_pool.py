"""A small connection pool on the datastore's PostgreSQL database, for the engine's side stores
(delivery bookkeeping, bot cron claims): open with its tables, run statements, close.

The PostgreSQL counterpart of :mod:`fhirbots.engine.storage.sqlite_file`; the datastore itself uses
:mod:`fhirbots.engine.storage.postgres`.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from fhirbots.engine.storage.migrations import (
    SchemaHistory,
    SchemaNotMigrated,
    migrate_postgres,
    require_current_postgres,
)
from fhirbots.engine.storage.sql import numbered

__all__ = ["DRIVER_ERRORS", "PostgresPool", "rows_changed"]

DRIVER_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What asyncpg raises when the database refuses a statement (``PostgresError``), when the
connection is gone or the pool closing (``InterfaceError``), when the server cannot be
reached or does not answer in time (``OSError``, which ``TimeoutError`` is), and when the
connection's protocol state or cached statements no longer match the server
(``InternalClientError``, e.g. a table altered under a prepared statement)."""


def rows_changed(status: str) -> int:
    """Rows a statement changed, from its status text (``DELETE 3``, ``INSERT 0 1``)."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresPool:
    """A pool whose tables are created or upgraded on open (:mod:`.migrations`, under an
    advisory lock so that processes starting together do not race), or only checked.

    Args:
        dsn: PostgreSQL connection string.
        schema: The store's migrations.
        lock: Advisory lock id of the store (kept for the store's own use).
        size: Most connections.
        name: How errors name the store (``"delivery store"``).
        error: The exception type :data:`DRIVER_ERRORS` are translated into.
        search_path: Schema holding the tables (created if missing); the default when None.
        migrate: Whether opening creates or upgrades the tables; without, it refuses a
            database whose tables are missing or old (``fhirbots migrate`` makes them).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: SchemaHistory,
        lock: int,
        size: int,
        name: str,
        error: type[Exception],
        search_path: str | None = None,
        migrate: bool = True,
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._lock = lock
        self._size = size
        self._name = name
        self._error = error
        self._search_path = search_path
        self._migrate = migrate
        self._pool: Any = None

    async def open(self) -> None:
        """Connect and create or upgrade the tables (or check them, without ``migrate``).

        Raises:
            SchemaNotMigrated: without ``migrate``, the tables are missing or old.
        """
        settings = {"search_path": self._search_path} if self._search_path else None
        try:
            if self._search_path:
                conn = await asyncpg.connect(self._dsn)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._search_path}"')
                finally:
                    await conn.close()
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._size, server_settings=settings
            )
            async with self._pool.acquire() as conn:
                if self._migrate:
                    await migrate_postgres(conn, self._schema)
                else:
                    await require_current_postgres(conn, self._schema)
        except DRIVER_ERRORS as exc:
            await self.close()
            raise self._error(f"{self._name}: {exc}") from exc
        except SchemaNotMigrated:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the pool (no error if it is not open)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> Any:
        """The asyncpg pool, for transactions spanning several statements."""
        if self._pool is None:
            raise self._error(f"{self._name} is not open")
        return self._pool

    async def fetch(self, sql: str, *args: object) -> list[Any]:
        """Rows of a query (``?`` or ``$n`` placeholders)."""
        try:
            rows: list[Any] = await self.pool.fetch(numbered(sql), *args)
        except DRIVER_ERRORS as exc:
            raise self._error(f"{self._name}: {exc}") from exc
        return rows

    async def execute(self, sql: str, *args: object) -> str:
        """Run a statement (``?`` or ``$n`` placeholders); its status text."""
        try:
            return str(await self.pool.execute(numbered(sql), *args))
        except DRIVER_ERRORS as exc:
            raise self._error(f"{self._name}: {exc}") from exc

    async def count(self, sql: str, *args: object) -> int:
        """Run an ``INSERT``, ``UPDATE`` or ``DELETE``; how many rows it changed (SQLite's
        ``rowcount``), read from the status text (``UPDATE 3``, ``INSERT 0 1``)."""
        return rows_changed(await self.execute(sql, *args))
