"""A project's search definitions read from the datastore, for searches and checks.

Each search reads the project's SearchParameter resources (one indexed query, usually no rows)
so a parameter written a moment ago is in effect at once, in every process; ValueSets and
CodeSystems are read only when the search uses ``:in``, ``:not-in``, ``:below`` or ``:above``.
"""

from __future__ import annotations

from collections.abc import Iterable

from fhirbots.engine.storage.port import Storage
from fhirbots.subscriptions.search.project import (
    DEFINITION_TYPES,
    ProjectSearch,
    needs_terminology,
    project_search,
)

__all__ = ["SearchDefinitions"]


class SearchDefinitions:
    """Reads a project's SearchParameters, ValueSets and CodeSystems.

    Args:
        storage: The datastore.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def load(self, project: str, names: Iterable[str] | None = None) -> ProjectSearch:
        """The project's definitions; with ``names`` (the parameters of one search), its
        terminology only when one of them needs it.

        Args:
            project: The project.
            names: Parameter names as written, or None for everything.
        """
        wanted = (
            DEFINITION_TYPES if names is None or needs_terminology(names) else ("SearchParameter",)
        )
        rows = await self._storage.current_resources(project, *wanted)
        return project_search(r.content for r in rows if r.content is not None)
