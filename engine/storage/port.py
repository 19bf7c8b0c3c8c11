"""The storage port: everything the engine asks of a datastore.

Adapters: :mod:`fhirbots.engine.storage.sqlite` (embedded default) and
:mod:`fhirbots.engine.storage.postgres`. Both pass the same test suite (``tests/engine/storage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from fhirbots.engine.storage.model import (
    ApiKeyRecord,
    HistoryPage,
    IndexOwner,
    OutboxRow,
    StoredResource,
    WriteContext,
    WriteOp,
    WriteResult,
)

__all__ = ["SearchIndexer", "Storage"]


class Storage(Protocol):
    """A FHIR datastore with version history, projects, API keys and a transactional outbox."""

    dialect: str
    """``sqlite`` or ``postgres``: which SQL the compiled searches must be written in."""

    async def open(self) -> None:
        """Connect and create the schema if it is missing."""

    async def close(self) -> None:
        """Release connections; pending writes finish first."""

    async def apply(
        self, project: str, ops: Sequence[WriteOp], context: WriteContext
    ) -> list[WriteResult]:
        """Apply ``ops`` atomically: all of them and their change events, or none.

        Raises:
            PreconditionFailed: an ``If-Match`` did not name the current version.
        """

    async def read(
        self, project: str, resource_type: str, resource_id: str
    ) -> StoredResource | None:
        """The current version (a tombstone if deleted), or None if it never existed."""

    async def vread(
        self, project: str, resource_type: str, resource_id: str, version_id: int
    ) -> StoredResource | None:
        """One version, or None."""

    async def history(
        self,
        project: str,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since: datetime | None = None,
        count: int = 50,
        offset: int = 0,
    ) -> HistoryPage:
        """Versions, newest first, at system, type or instance level."""

    async def count_by_type(self, project: str) -> dict[str, int]:
        """Live (not deleted) resources per type."""

    async def search(self, sql_text: str, params: Sequence[Any]) -> list[StoredResource]:
        """Run a compiled search query (``?`` placeholders) selecting
        :data:`fhirbots.engine.storage.sql.RESOURCE_COLUMNS` of ``resources r``."""

    async def search_rows(self, sql_text: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a read-only query over the search index; plain rows."""

    async def search_count(self, sql_text: str, params: Sequence[Any]) -> int:
        """Run a compiled count query."""

    async def ensure_project(self, project: str, name: str) -> bool:
        """Create the project if missing; True if it was created."""

    async def add_api_key(
        self, project: str, key_hash: str, *, name: str, admin: bool = False
    ) -> ApiKeyRecord:
        """Store a new API key (its hash only) for ``project``."""

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, or None."""

    async def outbox_pending(self, limit: int) -> list[OutboxRow]:
        """Unpublished change events in commit order."""

    async def outbox_mark_published(self, seqs: Sequence[int]) -> None:
        """Mark outbox rows as published: the first ones :meth:`outbox_pending` returned (SQLite
        keeps only the highest number published, so it takes every row up to it as marked)."""

    async def outbox_purge(self, older_than: datetime) -> int:
        """Delete published rows older than ``older_than``; returns how many."""


class SearchIndexer(Protocol):
    """Keeps search index tables in step with resources, inside the write's transaction."""

    def ddl(self, dialect: str) -> list[str]:
        """CREATE statements of the index tables (idempotent)."""

    def statements(
        self,
        dialect: str,
        owner: IndexOwner,
        resource: dict[str, Any] | None,
        *,
        indexed_before: bool = True,
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Statements (``?`` placeholders) and their parameter rows that replace the index rows
        of one resource (``owner``: its key, its project's key and its type); ``resource`` is
        None when it was deleted (remove its rows only).
        ``indexed_before`` False (a resource never stored) lets it skip removing old rows."""
