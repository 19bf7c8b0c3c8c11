"""Builds the observatory store from the settings (once, at the entry point)."""

from __future__ import annotations

from pathlib import Path

from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.engine.observatory.store_sqlite import OBSERVATORY_DB, SqliteObservatoryStore

__all__ = ["create_observatory_store"]


def create_observatory_store(
    database_url: str | None, data_dir: Path, *, migrate: bool = True
) -> ObservatoryStore:
    """PostgreSQL (the datastore's database) when a database URL is given, else
    ``observatory.db`` in ``data_dir``. The store is returned unopened; with ``migrate`` its
    opening creates or upgrades its tables, without it requires them."""
    if database_url:
        # Imported only when configured: the embedded engine never loads asyncpg.
        from fhirbots.engine.observatory.store_postgres import PostgresObservatoryStore

        return PostgresObservatoryStore(database_url, migrate=migrate)
    return SqliteObservatoryStore(data_dir / OBSERVATORY_DB, migrate=migrate)
