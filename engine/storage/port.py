"""The storage port: everything the engine asks of a datastore.

Every question is a typed method (a search takes the parsed
:class:`fhirbots.subscriptions.search.SearchQuery`): the SQL lives in the adapters
(:mod:`fhirbots.engine.storage.sqlite`, the embedded default, and
:mod:`fhirbots.engine.storage.postgres`) and the modules they share
(:mod:`~fhirbots.engine.storage.sql`, :mod:`~fhirbots.engine.storage.search_index`). Both
adapters pass the same test suite (``tests/engine/storage``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from fhirbots.engine.storage.model import (
    ApiKeyRecord,
    HistoryPage,
    IndexOwner,
    OutboxRow,
    ProjectRecord,
    StoredResource,
    WriteContext,
    WriteOp,
    WriteResult,
)
from fhirbots.subscriptions.search import SearchQuery

__all__ = ["SearchIndexer", "Storage"]


class Storage(Protocol):
    """A FHIR datastore with version history, projects, API keys and a transactional outbox."""

    dialect: str
    """``sqlite`` or ``postgres``: which engine holds the data."""

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

    async def current_resources(self, project: str, *resource_types: str) -> list[StoredResource]:
        """The live (not deleted) resources of ``resource_types`` in ``project``, ordered by
        type, then id."""

    async def current_by_ids(
        self, project: str, resource_type: str, ids: Sequence[str]
    ) -> list[StoredResource]:
        """The live resources of ``resource_type`` among ``ids``, ordered by id; ids that never
        existed or are deleted are left out."""

    async def current_ids_everywhere(self, resource_type: str) -> list[tuple[str, str]]:
        """``(project, id)`` of every live resource of ``resource_type`` in every project,
        ordered (for work that spans projects, such as cron schedules)."""

    async def search(
        self, project: str, query: SearchQuery, *, max_bytes: int | None = None
    ) -> list[StoredResource]:
        """The page of ``project``'s live resources matching ``query``: sorted by its
        ``_sort`` keys, then type and id; ``count`` from ``offset`` (all when ``count`` is
        None). Includes are not followed (see :meth:`include_targets`). With ``max_bytes``,
        the page ends early after the resource that takes its stored JSON past that many
        bytes, and no more than that is read from the database.

        Raises:
            SearchError: a clause or sort key the datastore cannot search.
        """

    async def search_count(self, project: str, query: SearchQuery) -> int:
        """How many of ``project``'s live resources match ``query`` (paging ignored).

        Raises:
            SearchError: a clause the datastore cannot search.
        """

    async def include_targets(
        self, project: str, source_type: str, params: Sequence[str], source_ids: Sequence[str]
    ) -> set[tuple[str, str]]:
        """``(type, id)`` of every reference that the reference parameters ``params`` of the
        ``source_type`` resources ``source_ids`` hold (``_include``); the targets may not
        exist."""

    async def revinclude_sources(
        self,
        project: str,
        source_type: str,
        params: Sequence[str],
        targets: Iterable[tuple[str, str]],
    ) -> set[tuple[str, str]]:
        """``(type, id)`` of the ``source_type`` resources whose reference parameters
        ``params`` point to one of ``targets``, ``(type, id)`` pairs (``_revinclude``)."""

    async def existing(self, project: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The ``(type, id)`` among ``keys`` that are live (not deleted) resources of
        ``project`` (referential integrity on write)."""

    async def referrers(
        self,
        project: str,
        targets: Sequence[str],
        *,
        limit: int,
        skip_types: Iterable[str] = (),
    ) -> list[tuple[str, str, str]]:
        """``(type, id, reference)`` of ``project``'s live resources holding a reference, as
        indexed by a reference search parameter, to one of ``targets`` (``Type/id`` texts or
        absolute URLs), but none of ``skip_types``: at most ``limit``, ordered by type, id and
        reference (referential integrity on delete)."""

    def exclusive(self, project: str, name: str) -> AbstractAsyncContextManager[None]:
        """The lock ``name`` of ``project``, held while the ``async with`` block runs.

        Conditional writes hold the lock of the searched type from their search to their
        commit, so that two of them never both find nothing and both create. PostgreSQL's is
        an advisory lock every process shares; SQLite's is held within this process (the one
        that serves the API on the file).
        """

    async def ensure_project(self, project: str, name: str) -> bool:
        """Create the project if missing; True if it was created."""

    async def add_api_key(
        self,
        project: str,
        key_hash: str,
        *,
        name: str,
        admin: bool = False,
        scope: str | None = None,
    ) -> ApiKeyRecord:
        """Store a new API key (its hash only) for ``project``, with its ``scope`` (JSON; None:
        everything inside the project)."""

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, or None when there is none or it is revoked (one indexed
        read: revocation is seen by the read that authenticates)."""

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        """The key ``key_id`` (revoked or not), or None."""

    async def list_api_keys(self, project: str | None = None) -> list[ApiKeyRecord]:
        """Every key (of ``project``), revoked ones included, by project and creation."""

    async def revoke_api_key(self, key_id: str) -> bool:
        """Revoke a key that exists; False when it was revoked already."""

    async def touch_api_key(self, key_id: str, when: datetime, unless_after: datetime) -> None:
        """Set the key's last-used time to ``when``, unless it is already after
        ``unless_after`` (so a key is written at most once per interval)."""

    async def list_projects(self) -> list[ProjectRecord]:
        """Every project, by id."""

    async def outbox_pending(self, limit: int) -> list[OutboxRow]:
        """Unpublished change events in commit order."""

    async def outbox_mark_published(self, seqs: Sequence[int]) -> None:
        """Mark outbox rows as published: the first ones :meth:`outbox_pending` returned (SQLite
        keeps only the highest number published, so it takes every row up to it as marked)."""

    async def outbox_purge(self, older_than: datetime) -> int:
        """Delete published rows older than ``older_than``; returns how many."""

    async def reindex(
        self, project: str, resource_type: str, after: str, limit: int
    ) -> tuple[int, str | None]:
        """Recompute the search index rows of the next ``limit`` live ``resource_type``
        resources of ``project`` (ids after ``after``, in id order) in one transaction, with the
        project's current SearchParameters; returns how many and the last id (None if none)."""


class SearchIndexer(Protocol):
    """Keeps search index tables in step with resources, inside the write's transaction.

    A project's stored SearchParameters add parameters to its index: before indexing a write,
    an adapter asks :meth:`stale` with the project's configuration generation and, if so, hands
    the project's SearchParameter resources to :meth:`define` (read in the same transaction).
    """

    def ddl(self, dialect: str) -> list[str]:
        """CREATE statements of the index tables (idempotent)."""

    def stale(self, project: str, generation: int) -> bool:
        """Whether the project's parameters must be (re)defined for this generation."""

    def define(self, project: str, generation: int, resources: list[dict[str, Any]]) -> None:
        """The project's current SearchParameter resources, as of ``generation``."""

    def forget(self) -> None:
        """Drop every project's parameters (a transaction that defined them rolled back)."""

    def statements(
        self,
        dialect: str,
        owner: IndexOwner,
        resource: dict[str, Any] | None,
        *,
        indexed_before: bool = True,
        project: str | None = None,
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Statements (``?`` placeholders) and their parameter rows that replace the index rows
        of one resource (``owner``: its key, its project's key and its type); ``resource`` is
        None when it was deleted (remove its rows only).
        ``indexed_before`` False (a resource never stored) lets it skip removing old rows;
        ``project`` adds the rows of that project's defined parameters (see :meth:`define`)."""
