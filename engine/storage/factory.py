"""Choose the storage adapter from the settings."""

from __future__ import annotations

from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.port import SearchIndexer, Storage

__all__ = ["create_storage"]


def create_storage(settings: Settings, *, indexer: SearchIndexer | None = None) -> Storage:
    """PostgreSQL when ``database_url`` is set, the embedded SQLite file otherwise."""
    # Each adapter is imported only when chosen: the embedded engine never loads asyncpg, and
    # an engine on PostgreSQL never loads the SQLite adapter.
    if settings.database_url:
        from fhirbots.engine.storage.postgres import PostgresStorage

        return PostgresStorage(
            settings.database_url, indexer=indexer, migrate=settings.migrates_on_start
        )
    from fhirbots.engine.storage.sqlite import SqliteStorage

    return SqliteStorage(
        settings.sqlite_path,
        indexer=indexer,
        writer_process=settings.sqlite_writer_process,
        migrate=settings.migrates_on_start,
    )
