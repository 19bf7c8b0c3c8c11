"""SQL of the referential integrity questions: which resources exist, who references one.

Both adapters run these statements (``?`` placeholders; PostgreSQL numbers them):

* :func:`existing_statements`: which of some ``(type, id)`` are live resources of a project,
  on the primary key of ``resources``.
* :func:`referrers_statements`: which live resources of a project hold a reference to one of
  some targets, read from the reference search index (``search_reference``) by its ``url``
  column, ``Type/id`` for a relative reference and the literal text for an absolute one, through
  the ``search_reference_target`` index. Only references some search parameter indexes are
  seen, as in HAPI FHIR's resource links.

Long lists are split into statements of at most :data:`CHUNK` values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fhirbots.engine.storage.search_index import PROJECT_KEY
from fhirbots.engine.storage.sql import marks

__all__ = ["CHUNK", "existing_statements", "referrers_statements"]

CHUNK = 500
"""Values per ``IN`` list: well under SQLite's 32,766 variables and short enough to plan fast."""


def existing_statements(
    project: str, keys: Iterable[tuple[str, str]]
) -> list[tuple[str, list[Any]]]:
    """Statements selecting ``(resource_type, id)`` of the live resources among ``keys``.

    Returns:
        ``(sql, params)`` pairs: one per type and chunk of ids, none when ``keys`` is empty.
    """
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    statements: list[tuple[str, list[Any]]] = []
    for resource_type, ids in sorted(by_type.items()):
        unique = sorted(set(ids))
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start : start + CHUNK]
            statements.append(
                (
                    "SELECT resource_type, id FROM resources WHERE project = ?"
                    f" AND resource_type = ? AND id IN ({marks(len(chunk))}) AND NOT deleted",
                    [project, resource_type, *chunk],
                )
            )
    return statements


def referrers_statements(
    project: str, targets: Sequence[str], limit: int, skip_types: Iterable[str] = ()
) -> list[tuple[str, list[Any]]]:
    """Statements selecting ``(resource_type, id, url)`` of the live resources, of none of
    ``skip_types``, whose indexed references are among ``targets`` (``Type/id`` texts or
    absolute URLs), at most ``limit`` rows each, ordered by type, id and reference.

    Returns:
        ``(sql, params)`` pairs: one per chunk of targets, none when ``targets`` is empty.
    """
    unique = sorted(set(targets))
    skipped = sorted(set(skip_types))
    skip = f" AND s.resource_type NOT IN ({marks(len(skipped))})" if skipped else ""
    statements: list[tuple[str, list[Any]]] = []
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        statements.append(
            (
                "SELECT DISTINCT r.resource_type, r.id, s.url FROM search_reference s"
                " JOIN resources r ON r.key = s.res"
                f" WHERE s.proj = {PROJECT_KEY} AND s.url IN ({marks(len(chunk))}){skip}"
                " AND NOT r.deleted ORDER BY r.resource_type, r.id, s.url LIMIT ?",
                [project, *chunk, *skipped, limit],
            )
        )
    return statements
