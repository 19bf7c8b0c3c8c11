"""SQL shared by the SQLite and PostgreSQL adapters.

Statements are written once with ``?`` placeholders; :func:`numbered` turns them into asyncpg's
``$1, $2, …``. Where the dialects differ (types, JSON column), :func:`schema` takes the dialect.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

from fhirbots.engine.errors import FhirError
from fhirbots.engine.storage.migrations import Migration, SchemaHistory, fixed

__all__ = [
    "BUMP_GENERATION",
    "FIND_LIVE_KEY",
    "INSERT_HISTORY",
    "INSERT_KEY",
    "INSERT_KEY_SCOPE",
    "INSERT_OUTBOX",
    "INSERT_PROJECT",
    "KEY_COLUMNS",
    "LIST_KEYS",
    "LIST_PROJECTS",
    "LIST_PROJECT_KEYS",
    "REFERENCE_TARGET_INDEX",
    "RESOURCE_COLUMNS",
    "REVOKE_KEY",
    "SCHEMA_VERSION",
    "SELECT_CURRENT",
    "SELECT_GENERATION",
    "SELECT_KEY",
    "SELECT_LIVE_IDS_EVERYWHERE",
    "SELECT_PROJECT_KEY",
    "SELECT_VERSION",
    "SQLITE_OUTBOX_MARK",
    "SQLITE_OUTBOX_PENDING",
    "SQLITE_OUTBOX_PURGE",
    "TOUCH_KEY",
    "UPSERT_CURRENT",
    "Dialect",
    "IncompatibleSchema",
    "check_schema_version",
    "history",
    "history_query",
    "live_by_ids",
    "live_of_types",
    "marks",
    "numbered",
    "schema",
]

Dialect = Literal["sqlite", "postgres"]

RESOURCE_COLUMNS = "resource_type, id, version_id, last_updated, deleted, content"
"""Columns every query returning resources selects, in this order (search queries too)."""

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {
        "json": "TEXT",
        "bool": "INTEGER",
        "time": "TEXT",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "key": "INTEGER PRIMARY KEY",
        "natural_key": "UNIQUE",
    },
    "postgres": {
        "json": "JSONB",
        "bool": "BOOLEAN",
        "time": "TIMESTAMPTZ",
        "serial": "BIGSERIAL PRIMARY KEY",
        "key": "BIGSERIAL UNIQUE",
        "natural_key": "PRIMARY KEY",
    },
}


SCHEMA_VERSION = 2
"""Version of the tables :func:`schema` makes (2: integer keys for the search index). Kept in
``PRAGMA user_version`` on SQLite and the ``schema_version`` table on PostgreSQL."""


class IncompatibleSchema(FhirError):
    """The database was made by a version of fhirbots with other tables."""


def check_schema_version(found: int, has_resources: bool) -> None:
    """Refuse a database whose tables another schema version made (an empty one is fine).

    Raises:
        IncompatibleSchema: naming both versions and what to do.
    """
    if has_resources and found != SCHEMA_VERSION:
        raise IncompatibleSchema(
            f"the database has schema version {found}, this fhirbots needs {SCHEMA_VERSION}:"
            " start on a new data dir or database and load the data again (fhirbots load)"
        )


def schema(dialect: Dialect) -> list[str]:
    """CREATE statements of the core tables (idempotent).

    Projects and resources have an integer ``key`` besides their natural key: the search
    index tables refer to them by it, so their rows and B-trees stay narrow."""
    t = _TYPES[dialect]
    return [
        f"""CREATE TABLE IF NOT EXISTS projects (
            key {t["key"]}, id TEXT NOT NULL {t["natural_key"]}, name TEXT NOT NULL,
            created {t["time"]} NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS api_keys (
            id TEXT PRIMARY KEY, project TEXT NOT NULL REFERENCES projects(id),
            name TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE, admin {t["bool"]} NOT NULL,
            created {t["time"]} NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS resources (
            key {t["key"]}, project TEXT NOT NULL, resource_type TEXT NOT NULL, id TEXT NOT NULL,
            version_id INTEGER NOT NULL, last_updated {t["time"]} NOT NULL,
            deleted {t["bool"]} NOT NULL, content {t["json"]},
            {t["natural_key"]} (project, resource_type, id))""",
        "CREATE INDEX IF NOT EXISTS resources_updated ON resources "
        "(project, resource_type, last_updated)",
        f"""CREATE TABLE IF NOT EXISTS resource_history (
            project TEXT NOT NULL, resource_type TEXT NOT NULL, id TEXT NOT NULL,
            version_id INTEGER NOT NULL, last_updated {t["time"]} NOT NULL,
            deleted {t["bool"]} NOT NULL, content {t["json"]},
            PRIMARY KEY (project, resource_type, id, version_id))""",
        "CREATE INDEX IF NOT EXISTS history_project_time ON resource_history "
        "(project, last_updated)",
        "CREATE INDEX IF NOT EXISTS history_type_time ON resource_history "
        "(project, resource_type, last_updated)",
        f"""CREATE TABLE IF NOT EXISTS outbox (
            seq {t["serial"]}, key TEXT NOT NULL, payload TEXT NOT NULL,
            created {t["time"]} NOT NULL, published {t["bool"]} NOT NULL DEFAULT {
            "0" if dialect == "sqlite" else "FALSE"
        })""",
        *_outbox_progress(dialect),
        """CREATE TABLE IF NOT EXISTS config_generations (
            project TEXT PRIMARY KEY, generation BIGINT NOT NULL)""",
    ]


REFERENCE_TARGET_INDEX = (
    "CREATE INDEX IF NOT EXISTS search_reference_target ON search_reference (proj, url, res)"
)
"""Who references a resource, whatever the source type and parameter (``url`` is ``Type/id``
for a relative reference): the search index DDL makes it, and step 3 adds it to databases
made before (:mod:`fhirbots.engine.storage.references`)."""


def history(index_ddl: Callable[[str], list[str]] | None) -> SchemaHistory:
    """The datastore's migrations: step 1 makes the tables of :func:`schema` and, with
    ``index_ddl`` (the search indexer's :meth:`ddl`), the search index tables.

    A database of the release before versions were kept (:data:`SCHEMA_VERSION` in
    ``PRAGMA user_version`` or the ``schema_version`` table) already has step 1's tables,
    whose statements are idempotent: migrating it records the step and changes nothing.
    """

    def first(dialect: Dialect) -> list[str]:
        return [*schema(dialect), *(index_ddl(dialect) if index_ddl is not None else [])]

    return SchemaHistory(
        "datastore",
        (
            Migration(1, "projects, keys, resources, history, outbox, search index", first),
            Migration(2, "API key state: scope, last used, revoked", _key_columns),
            Migration(
                3,
                "search index: who references a resource (referential integrity on delete)",
                fixed([REFERENCE_TARGET_INDEX] if index_ddl is not None else []),
            ),
        ),
    )


def _key_columns(dialect: Dialect) -> list[str]:
    """A key's scope, last use and revocation live beside ``api_keys`` (one row per key that
    has any), created idempotently so that a step replayed on tables that have it is a no-op."""
    t = _TYPES[dialect]
    return [
        f"""CREATE TABLE IF NOT EXISTS api_key_state (
            id TEXT PRIMARY KEY REFERENCES api_keys(id), scope TEXT,
            last_used {t["time"]}, revoked {t["time"]})"""
    ]


KEY_COLUMNS = (
    "k.id, k.project, k.name, k.admin, k.created, s.scope, s.last_used, s.revoked"
    " FROM api_keys k LEFT JOIN api_key_state s ON s.id = k.id"
)
"""What an :class:`~fhirbots.engine.storage.model.ApiKeyRecord` is read from, in order."""

FIND_LIVE_KEY = f"SELECT {KEY_COLUMNS} WHERE k.key_hash = ? AND s.revoked IS NULL"
"""The key with a hash, unless revoked: revocation is checked by the very read that
authenticates, so every process refuses a revoked key at once."""

LIST_KEYS = f"SELECT {KEY_COLUMNS} ORDER BY k.project, k.created, k.id"
LIST_PROJECT_KEYS = f"SELECT {KEY_COLUMNS} WHERE k.project = ? ORDER BY k.created, k.id"
SELECT_KEY = f"SELECT {KEY_COLUMNS} WHERE k.id = ?"
INSERT_KEY_SCOPE = "INSERT INTO api_key_state (id, scope) VALUES (?, ?)"
REVOKE_KEY = (
    "INSERT INTO api_key_state (id, revoked) VALUES (?, ?)"
    " ON CONFLICT (id) DO UPDATE SET revoked = excluded.revoked"
    " WHERE api_key_state.revoked IS NULL"
)
"""Revokes a live key (one row changed); a revoked one is left as it is (the key must exist)."""
TOUCH_KEY = (
    "INSERT INTO api_key_state (id, last_used) VALUES (?, ?)"
    " ON CONFLICT (id) DO UPDATE SET last_used = excluded.last_used"
    " WHERE api_key_state.last_used IS NULL OR api_key_state.last_used < ?"
)
"""Sets the last-used time unless one later than the bound is already stored (at most one
write a minute per key, whichever process authenticates it)."""
LIST_PROJECTS = "SELECT id, name, created FROM projects ORDER BY id"
INSERT_KEY = (
    "INSERT INTO api_keys (id, project, name, key_hash, admin, created) VALUES (?, ?, ?, ?, ?, ?)"
)


def _outbox_progress(dialect: Dialect) -> list[str]:
    """How the relay's progress is kept.

    PostgreSQL marks each published row: outbox sequence numbers are taken at insert, so a row
    may commit after one with a higher number. SQLite commits one write transaction at a time,
    so sequence order is commit order and one number, the highest published, says it all: a
    mark is one small row written, not every published row (and its payload) written again.
    """
    if dialect == "postgres":
        return ["CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE NOT published"]
    return [
        "DROP INDEX IF EXISTS outbox_pending",
        """CREATE TABLE IF NOT EXISTS outbox_published (
            id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL)""",
        # Tables from before kept progress in outbox.published: a prefix of the rows.
        "INSERT INTO outbox_published (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM outbox"
        " WHERE published ON CONFLICT (id) DO NOTHING",
    ]


SQLITE_OUTBOX_PENDING = (
    "SELECT seq, key, payload FROM outbox"
    " WHERE seq > (SELECT seq FROM outbox_published) ORDER BY seq LIMIT ?"
)
SQLITE_OUTBOX_MARK = "UPDATE outbox_published SET seq = MAX(seq, ?)"
SQLITE_OUTBOX_PURGE = (
    "DELETE FROM outbox WHERE seq <= (SELECT seq FROM outbox_published) AND created < ?"
)


INSERT_PROJECT = (
    "INSERT INTO projects (id, name, created) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING"
)
SELECT_PROJECT_KEY = "SELECT key FROM projects WHERE id = ?"
SELECT_CURRENT = (
    f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE project = ? AND resource_type = ? AND id = ?"
)
SELECT_VERSION = (
    f"SELECT {RESOURCE_COLUMNS} FROM resource_history "
    "WHERE project = ? AND resource_type = ? AND id = ? AND version_id = ?"
)
UPSERT_CURRENT = (
    "INSERT INTO resources (project, resource_type, id, version_id, last_updated, deleted, content)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project, resource_type, id) DO UPDATE SET"
    " version_id = excluded.version_id, last_updated = excluded.last_updated,"
    " deleted = excluded.deleted, content = excluded.content"
    " RETURNING key, (SELECT key FROM projects WHERE id = resources.project)"
)
"""Returns the resource's key and its project's key (the owner of its search index rows); the
project's is NULL for a project not yet registered (see :data:`INSERT_PROJECT`)."""
INSERT_HISTORY = (
    "INSERT INTO resource_history"
    " (project, resource_type, id, version_id, last_updated, deleted, content)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_OUTBOX = "INSERT INTO outbox (key, payload, created) VALUES (?, ?, ?)"
BUMP_GENERATION = (
    "INSERT INTO config_generations (project, generation) VALUES (?, 1)"
    " ON CONFLICT (project) DO UPDATE SET generation = config_generations.generation + 1"
    " RETURNING generation"
)
SELECT_GENERATION = "SELECT generation FROM config_generations WHERE project = ?"
SELECT_LIVE_IDS_EVERYWHERE = (
    "SELECT project, id FROM resources WHERE resource_type = ? AND NOT deleted"
)
"""``(project, id)`` of every live resource of one type, in every project."""


def marks(count: int) -> str:
    """``count`` placeholders for an ``IN (...)`` list (``count`` > 0)."""
    return ", ".join("?" * count)


def live_of_types(type_count: int) -> str:
    """The live resources of one project of ``type_count`` types; parameters: the project,
    then the types."""
    return (
        f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE project = ?"
        f" AND resource_type IN ({marks(type_count)}) AND NOT deleted"
    )


def live_by_ids(id_count: int) -> str:
    """The live resources of one project and type among ``id_count`` ids; parameters: the
    project, the type, then the ids."""
    return (
        f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE project = ? AND resource_type = ?"
        f" AND id IN ({marks(id_count)}) AND NOT deleted"
    )


def history_query(
    project: str, resource_type: str | None, resource_id: str | None, since: Any
) -> tuple[str, str, list[Any]]:
    """History COUNT and page SELECT (newest first; the page takes ``count, offset`` after the
    filters) and the filter values, for the filters that are set; ``since`` is already in the
    adapter's form of an instant."""
    where = ["project = ?"]
    filters: list[Any] = [project]
    for column, value in (("resource_type", resource_type), ("id", resource_id)):
        if value is not None:
            where.append(f"{column} = ?")
            filters.append(value)
    if since is not None:
        where.append("last_updated >= ?")
        filters.append(since)
    clause = " AND ".join(where)
    page = (
        f"SELECT {RESOURCE_COLUMNS} FROM resource_history WHERE {clause}"
        " ORDER BY last_updated DESC, version_id DESC LIMIT ? OFFSET ?"
    )
    return f"SELECT COUNT(*) FROM resource_history WHERE {clause}", page, filters


_PLACEHOLDER = re.compile(r"\?")


@lru_cache(maxsize=4096)
def numbered(sql: str) -> str:
    """``?`` placeholders to ``$1, $2, …`` (no statement here has a literal question mark).

    Cached: statements are few and fixed in shape, and this runs on every PostgreSQL call."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)
