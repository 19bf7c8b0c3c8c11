"""A small SQLite file served by one thread, for the engine's side stores (delivery
bookkeeping, bot cron claims): open with its schema, run functions on its connection, close.

The datastore itself uses :mod:`fhirbots.engine.storage.sqlite`, which needs group commit and
readers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from fhirbots.engine.storage.migrations import (
    SchemaHistory,
    migrate_sqlite,
    require_current_sqlite,
)

__all__ = ["BUSY_TIMEOUT_SECONDS", "SqliteFile"]

BUSY_TIMEOUT_SECONDS = 30.0
"""How long a statement waits for another process's write lock (a CLI command, say)."""

_T = TypeVar("_T")


class SqliteFile:
    """One SQLite file in WAL mode with a single connection on a single thread.

    Args:
        path: The database file (created with its folder).
        schema: The store's migrations, run on open (or, without ``migrate``, required to
            have run); None for a second connection to a file another one opened.
        name: How errors name the store (``"delivery store"``).
        error: The exception type ``sqlite3.Error`` (and an ``OSError`` making the folder) is
            translated into.
        synchronous: SQLite ``synchronous`` pragma.
        migrate: Whether opening creates or upgrades the tables.
    """

    def __init__(
        self,
        path: Path,
        *,
        schema: SchemaHistory | None,
        name: str,
        error: type[Exception],
        synchronous: str = "FULL",
        migrate: bool = True,
    ) -> None:
        self.path = path
        self._schema = schema
        self._name = name
        self._error = error
        self._synchronous = synchronous
        self._migrate = migrate
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        """Open the file and create the tables."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(f"{self._name}: {exc}") from exc
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=self._name.replace(" ", "-"))
        await self.call(self._open)

    def _open(self) -> None:
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        try:
            if self._schema is not None and self._migrate:
                migrate_sqlite(conn, self._schema)
            elif self._schema is not None:
                require_current_sqlite(conn, self._schema)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        """Close the file (no error if it is not open)."""
        if self._executor is None:
            return
        if self._conn is not None:
            await self.call(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def call(self, fn: Callable[..., _T], *args: object) -> _T:
        """Run ``fn(*args)`` on the store's thread; SQLite errors become the store's error."""
        if self._executor is None:
            raise self._error(f"{self._name} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise self._error(f"{self._name}: {exc}") from exc

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection (use it only inside :meth:`call`)."""
        if self._conn is None:
            raise self._error(f"{self._name} is not open")
        return self._conn
