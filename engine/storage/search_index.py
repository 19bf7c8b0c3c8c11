"""The SQL search index: index tables, the rows a resource contributes, compiled searches.

One table per value kind (``search_string``, ``search_token``, ``search_reference``,
``search_date``, ``search_number``, ``search_quantity``, ``search_uri``); every row carries
``res, proj, resource_type, param``: the integer keys of its resource and project, which keep
rows and index entries narrow. The rows of a resource are exactly the entries
:func:`fhirbots.subscriptions.search.entries_for` computes, and the SQL conditions mirror the
in-memory tests of :mod:`fhirbots.subscriptions.search.matcher` one for one, so a SQL search and
:func:`fhirbots.subscriptions.search.matches` agree (the differential test checks it).

Statements use ``?`` placeholders in both dialects; the PostgreSQL adapter numbers them
(``fhirbots.engine.storage.sql.numbered``) for asyncpg.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fhirbots.engine.storage.model import IndexOwner
from fhirbots.engine.storage.sql import (
    REFERENCE_TARGET_INDEX,
    RESOURCE_COLUMNS,
    SELECT_PROJECT_KEY,
    marks,
)
from fhirbots.subscriptions.search import SearchQuery, default_registry
from fhirbots.subscriptions.search.entries import composite_groups, entries_for
from fhirbots.subscriptions.search.errors import UnsupportedSearchError
from fhirbots.subscriptions.search.query import (
    ChainClause,
    Clause,
    CompositeClause,
    DateValue,
    HasClause,
    MissingClause,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from fhirbots.subscriptions.search.registry import Registry
from fhirbots.subscriptions.search.stored import project_registry

__all__ = [
    "GROUP_COLUMN",
    "PROJECT_KEY",
    "REINDEX_BATCH",
    "TABLES",
    "IndexRows",
    "SqlSearchIndexer",
    "compile_count",
    "compile_search",
    "delete_statements",
    "include_statements",
    "index_ddl",
    "index_rows",
    "insert_statement",
    "revinclude_statements",
]

Dialect = Literal["sqlite", "postgres"]

TABLES: dict[str, tuple[str, ...]] = {
    "string": ("value_norm", "value_exact"),
    "token": ("system", "code", "text", "type_system", "type_code"),
    "reference": ("ref_type", "ref_id", "url", "id_system", "id_value"),
    "date": ("low", "high"),
    "number": ("low", "high"),
    "quantity": ("low", "high", "system", "code", "unit"),
    "uri": ("uri",),
}
"""Value columns of each index table (``search_<kind>``), in entry field order."""

GROUP_COLUMN = "grp"
"""Last column of every index table: for the component rows of a composite parameter (param
``<code>$<component index>``), the number of the element they come from; NULL otherwise."""

_COLUMN_TYPES: dict[Dialect, dict[str, str]] = {
    # Dates are microseconds since the epoch: integer comparison, identical in both engines.
    "sqlite": {"date": "INTEGER", "number": "REAL", "text": "TEXT", "key": "INTEGER"},
    "postgres": {"date": "BIGINT", "number": "DOUBLE PRECISION", "text": "TEXT", "key": "BIGINT"},
}

PROJECT_KEY = f"({SELECT_PROJECT_KEY})"
"""The integer key of the project whose id is the parameter (index rows carry the key)."""

_LOOKUP_COLUMNS: dict[str, tuple[str, ...]] = {
    "string": ("value_norm",),
    "token": ("code", "system"),
    "reference": ("ref_id", "ref_type"),
    "date": ("low", "high"),
    "number": ("low",),
    "quantity": ("low",),
    "uri": ("uri",),
}
"""Columns after ``(proj, resource_type, param)`` in each table's lookup index."""

_SORT_COLUMNS: dict[str, tuple[str, str]] = {
    "string": ("MIN(s.value_norm)", "MAX(s.value_norm)"),
    "token": ("MIN(s.code)", "MAX(s.code)"),
    "date": ("MIN(s.low)", "MAX(s.high)"),
    "number": ("MIN(s.low)", "MAX(s.high)"),
    "quantity": ("MIN(s.low)", "MAX(s.high)"),
    "uri": ("MIN(s.uri)", "MAX(s.uri)"),
}
"""Sort value per type for ascending and descending ``_sort`` keys (FHIR: the lowest value
sorts ascending, the highest descending)."""


def _column_type(dialect: Dialect, kind: str, column: str) -> str:
    types = _COLUMN_TYPES[dialect]
    if column in {"low", "high"}:
        return types["date"] if kind == "date" else types["number"]
    return types["text"]


def index_ddl(dialect: Dialect) -> list[str]:
    """CREATE TABLE/INDEX IF NOT EXISTS statements of the index tables.

    Args:
        dialect: ``sqlite`` or ``postgres``.

    Returns:
        Idempotent DDL statements, tables first.
    """
    statements: list[str] = []
    key = _COLUMN_TYPES[dialect]["key"]
    for kind, columns in TABLES.items():
        table = f"search_{kind}"
        cols = ", ".join(f"{c} {_column_type(dialect, kind, c)}" for c in columns)
        # res and proj are the integer keys of the owning resource and its project: a row
        # and its index entries are a few bytes of key, not two UUIDs and a type name.
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table} (res {key} NOT NULL, proj {key} NOT NULL, "
            f"resource_type TEXT NOT NULL, param TEXT NOT NULL, "
            f"{cols}, {GROUP_COLUMN} INTEGER)"
        )
        statements.append(f"CREATE INDEX IF NOT EXISTS {table}_owner ON {table} (res, param)")
        # Ends with res: a lookup finds its resources in the index alone.
        lookup = ", ".join(_LOOKUP_COLUMNS[kind])
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {table}_lookup ON {table} "
            f"(proj, resource_type, param, {lookup}, res)"
        )
    statements.append(REFERENCE_TARGET_INDEX)  # who references a resource (integrity)
    return statements


@dataclass(frozen=True, slots=True)
class IndexRows:
    """The index rows of one resource: per table kind, tuples of
    ``(param, *value columns, group)``."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


def index_rows(
    resource_type: str, resource: dict[str, Any], registry: Registry | None = None
) -> IndexRows:
    """The rows to insert for ``resource`` (a pure function of the resource).

    Args:
        resource_type: The resource's type.
        resource: The resource as stored (with ``id`` and ``meta``).
        registry: Parameter definitions; defaults to the shipped R4 registry.

    Returns:
        Rows per table kind; each row is ``(param, *TABLES[kind], group)``.
    """
    reg = registry or default_registry()
    content = (
        resource
        if resource.get("resourceType") == resource_type
        else {
            **resource,
            "resourceType": resource_type,
        }
    )
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for param in reg.supported_params(resource_type):
        code = param.code
        if param.type != "composite":
            entries = entries_for(param, content)
            if entries:
                bucket = rows.setdefault(param.type, [])
                bucket.extend((code, *entry, None) for entry in dict.fromkeys(entries))
            continue
        for group, components in enumerate(composite_groups(param, content)):
            for index, (kind, entries) in enumerate(
                zip(param.component_types, components, strict=True)
            ):
                bucket = rows.setdefault(kind, [])
                bucket.extend((f"{code}${index}", *entry, group) for entry in set(entries))
    return IndexRows(rows)


REINDEX_BATCH = (
    "SELECT key, id, content FROM resources WHERE project = ? AND resource_type = ?"
    " AND id > ? AND NOT deleted ORDER BY id LIMIT ?"
)
"""The next batch of resources to reindex: key, id and content, in id order."""


def delete_statements() -> list[str]:
    """DELETE statements of the index tables, parameter the resource's key."""
    return [f"DELETE FROM search_{kind} WHERE res = ?" for kind in TABLES]


def insert_statement(kind: str) -> str:
    """INSERT statement of one table, parameters ``*IndexOwner, param, *TABLES[kind],
    group``."""
    columns = ("res", "proj", "resource_type", "param", *TABLES[kind], GROUP_COLUMN)
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO search_{kind} ({', '.join(columns)}) VALUES ({marks})"


class SqlSearchIndexer:
    """The :class:`fhirbots.engine.storage.port.SearchIndexer` the storage adapters call on each
    write.

    Args:
        registry: Parameter definitions; defaults to the shipped R4 registry.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = registry or default_registry()
        self._projects: dict[str, tuple[int, Registry]] = {}
        """Per project: the generation its parameters were defined for, and its registry."""

    def ddl(self, dialect: str) -> list[str]:
        """CREATE statements of the index tables."""
        return index_ddl("postgres" if dialect == "postgres" else "sqlite")

    def stale(self, project: str, generation: int) -> bool:
        """Whether ``project``'s parameters were defined for another generation (or never)."""
        found = self._projects.get(project)
        return found is None or found[0] != generation

    def define(self, project: str, generation: int, resources: list[dict[str, Any]]) -> None:
        """Index ``project``'s resources with its active SearchParameters from now on."""
        custom = project_registry(resources)
        self._projects[project] = (
            generation,
            self._registry if custom is default_registry() else custom,
        )

    def forget(self) -> None:
        """Drop what :meth:`define` learnt (it may come from a rolled back transaction)."""
        self._projects.clear()

    def registry_for(self, project: str | None) -> Registry:
        """The registry a resource of ``project`` is indexed with."""
        found = self._projects.get(project) if project is not None else None
        return found[1] if found is not None else self._registry

    def statements(
        self,
        dialect: str,
        owner: IndexOwner,
        resource: dict[str, Any] | None,
        *,
        indexed_before: bool = True,
        project: str | None = None,
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Delete the resource's old rows, then insert its new ones (none when deleted); with
        ``project``, its SearchParameters (see :meth:`define`) add rows.

        With ``indexed_before`` False (a resource never stored) there are no old rows, and
        SQLite skips the DELETEs.

        SQLite (in process) gets a DELETE per table and an INSERT per table with rows;
        PostgreSQL one statement doing all of it, so a write costs one more round trip.
        """
        if owner.resource_type == "SearchParameter" and project is not None:
            # The project's parameters change with this write: read them again next time
            # (they were read before it, in the same transaction).
            self._projects.pop(project, None)
        rows = (
            index_rows(owner.resource_type, resource, self.registry_for(project))
            if resource is not None
            else IndexRows()
        )
        if dialect == "postgres":
            return [(_PG_REPLACE, [_pg_replace_params(owner, rows)])]
        out: list[tuple[str, list[tuple[Any, ...]]]] = (
            [(statement, [(owner.resource,)]) for statement in delete_statements()]
            if indexed_before
            else []
        )
        for table, table_rows in rows.rows.items():
            out.append((insert_statement(table), [(*owner, *row) for row in table_rows]))
        return out


_PG_ARRAY_TYPES = {"text": "text[]", "date": "int8[]", "number": "float8[]"}


def _pg_array_type(kind: str, column: str) -> str:
    if column in {"low", "high"}:
        return _PG_ARRAY_TYPES["date" if kind == "date" else "number"]
    return _PG_ARRAY_TYPES["text"]


def _pg_replace_statement() -> str:
    """One statement that replaces a resource's rows in every table: the DELETEs and the
    INSERTs (from ``unnest`` of one array per column) run on the same snapshot, so the
    DELETEs see only the old rows. One round trip per write."""
    ctes = [f"d_{kind} AS (DELETE FROM search_{kind} WHERE res = ?)" for kind in TABLES]
    for kind, columns in TABLES.items():
        names = ", ".join(("param", *columns, GROUP_COLUMN))
        arrays = ", ".join(
            [
                "?::text[]",
                *(f"?::{_pg_array_type(kind, c)}" for c in columns),
                "?::int4[]",
            ]
        )
        ctes.append(
            f"i_{kind} AS (INSERT INTO search_{kind} (res, proj, resource_type, "
            f"{names}) SELECT ?, ?, ?, u.* FROM unnest({arrays}) AS u)"
        )
    return f"WITH {', '.join(ctes)} SELECT 1"


_PG_REPLACE = _pg_replace_statement()


def _pg_replace_params(owner: IndexOwner, rows: IndexRows) -> tuple[Any, ...]:
    params: list[Any] = [owner.resource] * len(TABLES)
    for kind, columns in TABLES.items():
        table_rows = rows.rows.get(kind, [])
        params.extend(owner)
        width = len(columns) + 2  # param, value columns, group
        params.extend([row[i] for row in table_rows] for i in range(width))
    return tuple(params)


# --- compiling searches --------------------------------------------------------------------


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


_LIKE = "LIKE ? ESCAPE '\\'"


def _string_sql(mod: str | None, value: StringValue) -> tuple[str, list[Any]]:
    if mod == "exact":
        return "s.value_exact = ?", [value.raw]
    if mod == "contains":
        return f"s.value_norm {_LIKE}", ["%" + _like_prefix(value.norm)]
    return f"s.value_norm {_LIKE}", [_like_prefix(value.norm)]


def _token_sql(mod: str | None, value: TokenValue) -> tuple[str, list[Any]]:
    if mod == "text":
        return f"s.text {_LIKE}", [_like_prefix(value.code or "")]
    if mod == "of-type":
        cond = "s.code = ? AND s.type_code = ?"
        params: list[Any] = [value.code, value.type_code]
        if value.type_system is not None:
            cond += " AND s.type_system = ?"
            params.append(value.type_system)
        return cond, params
    if value.system is None:
        return "s.code = ?", [value.code]
    if value.system == "":
        return "s.system IS NULL AND s.code = ?", [value.code]
    in_system = "(s.system = ? OR s.system IS NULL)" if value.implicit else "s.system = ?"
    if value.code is None:
        return in_system, [value.system]
    return f"{in_system} AND s.code = ?", [value.system, value.code]


def _reference_sql(_mod: str | None, value: ReferenceValue) -> tuple[str, list[Any]]:
    if value.id_value is not None:
        if value.id_system is None:
            return "s.id_value = ?", [value.id_value]
        return "s.id_value = ? AND s.id_system = ?", [value.id_value, value.id_system]
    if value.url is not None:
        return "s.url = ?", [value.url]
    if value.ref_type is not None:
        return "s.ref_type = ? AND s.ref_id = ?", [value.ref_type, value.ref_id]
    if value.types:
        marks = ", ".join("?" for _ in value.types)
        return f"s.ref_id = ? AND s.ref_type IN ({marks})", [value.ref_id, *value.types]
    return "s.ref_id = ?", [value.ref_id]


def _date_sql(_mod: str | None, value: DateValue) -> tuple[str, list[Any]]:
    sl, sh = value.low, value.high
    within = ("(s.low >= ? AND s.high <= ?)", [sl, sh])
    forms: dict[str, tuple[str, list[Any]]] = {
        "eq": within,
        "ne": ("NOT (s.low >= ? AND s.high <= ?)", [sl, sh]),
        "gt": ("s.high > ?", [sh]),
        "lt": ("s.low < ?", [sl]),
        "ge": ("s.high >= ?", [sl]),
        "le": ("s.low <= ?", [sh]),
        "sa": ("s.low > ?", [sh]),
        "eb": ("s.high < ?", [sl]),
        "ap": ("(s.low <= ? AND s.high >= ?)", [sh, sl]),
    }
    return forms[value.prefix]


def _number_condition(value: NumberValue) -> tuple[str, list[Any]]:
    v, lo, hi = value.value, value.low, value.high
    forms: dict[str, tuple[str, list[Any]]] = {
        "eq": ("(s.low >= ? AND s.high < ?)", [lo, hi]),
        "ne": ("NOT (s.low >= ? AND s.high < ?)", [lo, hi]),
        "gt": ("s.high > ?", [v]),
        "lt": ("s.low < ?", [v]),
        "ge": ("s.high >= ?", [v]),
        "le": ("s.low <= ?", [v]),
        "sa": ("s.low > ?", [v]),
        "eb": ("s.high < ?", [v]),
        "ap": ("(s.low <= ? AND s.high >= ?)", [hi, lo]),
    }
    return forms[value.prefix]


def _number_sql(_mod: str | None, value: NumberValue) -> tuple[str, list[Any]]:
    return _number_condition(value)


def _quantity_sql(_mod: str | None, value: QuantityValue) -> tuple[str, list[Any]]:
    cond, params = _number_condition(value.number)
    parts = [cond]
    if value.system is not None:
        parts.append("s.system = ?")
        params.append(value.system)
        if value.code is not None:
            parts.append("s.code = ?")
            params.append(value.code)
    elif value.code is not None:
        parts.append("(s.code = ? OR s.unit = ?)")
        params.extend([value.code, value.code])
    return " AND ".join(parts), params


def _uri_sql(mod: str | None, value: UriValue) -> tuple[str, list[Any]]:
    # substr() rather than LIKE: LIKE ignores ASCII case in SQLite, uris compare exactly.
    if mod == "below":
        return "substr(s.uri, 1, ?) = ?", [len(value.uri), value.uri]
    if mod == "above":
        return "substr(CAST(? AS TEXT), 1, length(s.uri)) = s.uri", [value.uri]
    return "s.uri = ?", [value.uri]


_OWNER_TABLE = re.compile(r"(?<=^FROM )(search_\w+) \w+ ")
"""The index table and alias a membership subquery starts with."""

_ROW_ALIAS = re.compile(r"\bs\.")
"""The index-row alias ``s.`` in value conditions, renamed per subquery."""

_VALUE_SQL: dict[str, Callable[[str | None, Any], tuple[str, list[Any]]]] = {
    "string": _string_sql,
    "token": _token_sql,
    "reference": _reference_sql,
    "date": _date_sql,
    "number": _number_sql,
    "quantity": _quantity_sql,
    "uri": _uri_sql,
}


class _Compiler:
    """Builds the WHERE conditions of one search; aliases stay unique across nesting.

    Membership tests are ``x IN (SELECT ...)``: SQLite runs the subquery once into a temporary
    index, PostgreSQL plans a (hash) semi-join. On PostgreSQL a selective equality that drives
    the search is ``x = ANY(ARRAY(SELECT ...))`` instead: a small array, run once, probed through
    the primary key. Broad lists stay ``IN``: an array is searched linearly for every row (12
    times slower on a two-month Encounter date range over 62,400 resources).
    """

    def __init__(self, project: str, dialect: Dialect) -> None:
        self.project = project
        self.dialect = dialect
        self._aliases: Iterator[int] = itertools.count()
        self.narrow_list = False
        """PostgreSQL: the clause yields few rows (a selective equality), so run it once as an
        array (``= ANY(ARRAY(...))``) that drives the search through the primary key."""
        self.correlated = False
        """Test membership per candidate row (``EXISTS`` on the owner index) instead of
        building the whole list; set for every clause after a selective equality."""

    def alias(self, stem: str) -> str:
        return f"{stem}{next(self._aliases)}"

    def member(self, left: str, select: str, rest: str) -> str:
        """``left`` is among the values of ``SELECT select rest``."""
        if self.dialect == "postgres" and self.narrow_list:
            return f"{left} = ANY(ARRAY(SELECT {select} {rest}))"
        return f"{left} IN (SELECT {select} {rest})"

    def owner_member(self, outer: str, s: str, resource_type: str | None, rest: str) -> str:
        """The row ``outer`` owns an index row of ``SELECT ... rest`` (alias ``s``)."""
        if self.correlated and resource_type is not None:
            # SQLite: pinned to the owner index; without statistics it may pick the lookup
            # index and scan every row with the value for each candidate. PostgreSQL plans
            # the EXISTS as a semi-join.
            pinned = (
                _OWNER_TABLE.sub(rf"\1 {s} INDEXED BY \1_owner ", rest, count=1)
                if self.dialect == "sqlite"
                else rest
            )
            return f"EXISTS (SELECT 1 {pinned} AND {s}.res = {outer}.key)"
        return self.member(f"{outer}.key", f"{s}.res", rest)

    def index_rows(
        self, kind: str, code: str, resource_type: str | None
    ) -> tuple[str, str, list[Any]]:
        """``(alias, FROM/WHERE text, params)`` of the index rows of parameter ``code``."""
        s = self.alias("s")
        where = f"{s}.proj = {PROJECT_KEY} AND {s}.param = ?"
        params: list[Any] = [self.project, code]
        if resource_type is not None:
            where += f" AND {s}.resource_type = ?"
            params.append(resource_type)
        return s, f"FROM search_{kind} {s} WHERE {where}", params

    def clause(
        self, clause: Clause, resource_type: str | None, outer: str
    ) -> tuple[str, list[Any]]:
        if isinstance(clause, ChainClause):
            return self._chain(clause, resource_type, outer)
        if isinstance(clause, HasClause):
            return self._has(clause, resource_type, outer)
        if isinstance(clause, CompositeClause):
            return self._composite(clause, resource_type, outer)
        kind = clause.param.type
        s, body, params = self.index_rows(kind, clause.param.code, resource_type)
        if isinstance(clause, MissingClause):
            negate = "NOT " if clause.missing else ""
            return f"{negate}{self.owner_member(outer, s, resource_type, body)}", params
        conditions: list[str] = []
        values = list(clause.values)
        if kind == "token" and clause.modifier in (None, "not"):
            for cond, value_params in _code_lists(values):
                conditions.append(f"({_ROW_ALIAS.sub(s + '.', cond)})")
                params.extend(value_params)
        for value in values:
            cond, value_params = _VALUE_SQL[kind](clause.modifier, value)
            conditions.append(f"({_ROW_ALIAS.sub(s + '.', cond)})")
            params.extend(value_params)
        negate = "NOT " if clause.modifier == "not" else ""
        # No values at all (an empty ValueSet): nothing matches.
        rest = f"{body} AND ({' OR '.join(conditions) or '1 = 0'})"
        return f"{negate}{self.owner_member(outer, s, resource_type, rest)}", params

    def _composite(
        self, clause: CompositeClause, resource_type: str | None, outer: str
    ) -> tuple[str, list[Any]]:
        """One membership per value: rows of every component from the same element."""
        alternatives: list[str] = []
        params: list[Any] = []
        code = clause.param.code
        for value in clause.values:
            first, body, body_params = self.index_rows(
                clause.param.component_types[0], f"{code}$0", resource_type
            )
            joins: list[str] = []
            join_params: list[Any] = []
            conditions: list[str] = []
            condition_params: list[Any] = []
            for index, part in enumerate(value.parts):
                kind = clause.param.component_types[index]
                alias = first
                if index:
                    alias = self.alias("c")
                    joins.append(
                        f"JOIN search_{kind} {alias} ON {alias}.res = {first}.res "
                        f"AND {alias}.{GROUP_COLUMN} = {first}.{GROUP_COLUMN} "
                        f"AND {alias}.param = ?"
                    )
                    join_params.append(f"{code}${index}")
                cond, cond_params = _VALUE_SQL[kind](None, part)
                conditions.append(f"({_ROW_ALIAS.sub(alias + '.', cond)})")
                condition_params.extend(cond_params)
            table, where = body.split(" WHERE ", 1)
            rest = f"{table} {' '.join(joins)} WHERE {where} AND {' AND '.join(conditions)}"
            alternatives.append(self.owner_member(outer, first, resource_type, rest))
            params.extend([*join_params, *body_params, *condition_params])
        return f"({' OR '.join(alternatives)})", params

    def _live(
        self, column: str, clause: Clause, resource_type: str, *, by: str = "id"
    ) -> tuple[str, list[Any]]:
        """``column`` is the ``by`` (``id`` or ``key``) of a live ``resource_type`` resource
        matching ``clause``."""
        t = self.alias("t")
        inner, inner_params = self.clause(clause, resource_type, t)
        sql = (
            f"FROM resources {t} WHERE {t}.project = ? AND {t}.resource_type = ? "
            f"AND NOT {t}.deleted AND {inner}"
        )
        return self.member(column, f"{t}.{by}", sql), [
            self.project,
            resource_type,
            *inner_params,
        ]

    def _chain(
        self, clause: ChainClause, resource_type: str | None, outer: str
    ) -> tuple[str, list[Any]]:
        s, body, params = self.index_rows("reference", clause.param.code, resource_type)
        targets, target_params = self._live(f"{s}.ref_id", clause.inner, clause.target_type)
        rest = f"{body} AND {s}.ref_type = ? AND {targets}"
        sql = self.owner_member(outer, s, resource_type, rest)
        return sql, [*params, clause.target_type, *target_params]

    def _has(
        self, clause: HasClause, resource_type: str | None, outer: str
    ) -> tuple[str, list[Any]]:
        if resource_type is None:
            raise UnsupportedSearchError("_has needs a resource type", param=clause.name)
        s, body, params = self.index_rows("reference", clause.reference.code, clause.source_type)
        sources, source_params = self._live(f"{s}.res", clause.inner, clause.source_type, by="key")
        rest = f"{body} AND {s}.ref_type = ? AND {sources}"
        sql = self.member(f"{outer}.id", f"{s}.ref_id", rest)
        return sql, [*params, resource_type, *source_params]


_CODE_LIST_MIN = 4
"""Codes of one system from which a token clause tests ``code IN (...)`` rather than one
condition per code (expanded ValueSets and hierarchies give hundreds)."""


def _code_lists(values: list[Any]) -> list[tuple[str, list[Any]]]:
    """Take the plain ``system|code`` values of systems with many codes out of ``values``
    and return one ``system = ? AND code IN (...)`` condition per such system."""
    by_system: dict[tuple[str, bool], list[str]] = {}
    for value in values:
        if isinstance(value, TokenValue) and value.system and value.code is not None:
            by_system.setdefault((value.system, value.implicit), []).append(value.code)
    out: list[tuple[str, list[Any]]] = []
    for (system, implicit), codes in sorted(by_system.items()):
        if len(codes) < _CODE_LIST_MIN:
            continue
        taken = set(codes)
        values[:] = [
            v
            for v in values
            if not (
                isinstance(v, TokenValue)
                and v.system == system
                and v.implicit == implicit
                and v.code in taken
            )
        ]
        in_system = "(s.system = ? OR s.system IS NULL)" if implicit else "s.system = ?"
        out.append((f"{in_system} AND s.code IN ({marks(len(codes))})", [system, *codes]))
    return out


def _where(query: SearchQuery, project: str, dialect: Dialect) -> tuple[str, list[Any]]:
    compiler = _Compiler(project, dialect)
    ordered = sorted(query.clauses, key=_selectivity_rank)
    # When an equality (reference, token, ...) yields few candidates, the other clauses are
    # checked per candidate, so a broad clause (a date range) never materialises all its rows.
    # When the best clause is itself a range, intersecting the lists is cheaper.
    narrow = bool(ordered) and _selectivity_rank(ordered[0]) <= _NARROW_RANK
    # SQLite, without statistics, would rather walk every resource of the type in index order
    # (saving the sort) than look up the few candidates by key; "+" keeps it off that index.
    off_index = "+" if narrow and dialect == "sqlite" else ""
    conditions = [f"{off_index}r.project = ?", "NOT r.deleted"]
    params: list[Any] = [project]
    if query.resource_type is not None:
        conditions.append(f"{off_index}r.resource_type = ?")
        params.append(query.resource_type)
    for position, clause in enumerate(ordered):
        compiler.narrow_list = narrow and position == 0
        compiler.correlated = narrow and position > 0
        cond, clause_params = compiler.clause(clause, query.resource_type, "r")
        conditions.append(cond)
        params.extend(clause_params)
    return " AND ".join(conditions), params


_KIND_RANK = {"reference": 0, "token": 1, "uri": 2, "string": 2, "quantity": 3, "number": 3}
_NARROW_RANK = 2
"""How selective an equality on each parameter type usually is (lower first); dates, which
search ranges, and everything else come after."""


def _selectivity_rank(clause: Clause) -> int:
    if isinstance(clause, MissingClause | ChainClause | HasClause):
        return 8
    if isinstance(clause, CompositeClause):
        return 3
    if clause.modifier in ("not", "text", "contains", "missing"):
        return 7
    return _KIND_RANK.get(clause.param.type, 5)


def _order_by(
    query: SearchQuery, project: str, dialect: Dialect
) -> tuple[str, list[Any], str, list[Any]]:
    """``(joins, join params, ORDER BY text, order params)`` of the ``_sort`` keys.

    Each key is a LEFT JOIN on the per-resource aggregate of its index rows (computed once,
    not per row); resources without a value sort last in both directions.
    """
    # PostgreSQL's default collation orders text by locale rules; "C" orders by code point
    # like SQLite, so both engines page identically.
    collate = ' COLLATE "C"' if dialect == "postgres" else ""
    joins: list[str] = []
    join_params: list[Any] = []
    keys: list[str] = []
    for number, key in enumerate(query.sort):
        kind = key.param.type
        if kind not in _SORT_COLUMNS:
            raise UnsupportedSearchError(f"cannot sort by {key.param.code!r}", param="_sort")
        agg = _SORT_COLUMNS[kind][1 if key.descending else 0]
        k = f"k{number}"
        where = f"s.proj = {PROJECT_KEY} AND s.param = ?"
        join_params.extend([project, key.param.code])
        if query.resource_type is not None:
            where += " AND s.resource_type = ?"
            join_params.append(query.resource_type)
        joins.append(
            f"LEFT JOIN (SELECT s.res, {agg} AS v "
            f"FROM search_{kind} s WHERE {where} GROUP BY s.res) {k} ON {k}.res = r.key"
        )
        text_sort = kind in {"string", "token", "uri"}
        keys.append(f"{k}.v IS NULL")
        keys.append(f"{k}.v{collate if text_sort else ''} {'DESC' if key.descending else 'ASC'}")
    keys.append(f"r.resource_type{collate} ASC")
    keys.append(f"r.id{collate} ASC")
    return " ".join(joins), join_params, ", ".join(keys), []


def compile_search(
    query: SearchQuery, *, project: str, dialect: Dialect = "sqlite"
) -> tuple[str, list[Any]]:
    """SQL selecting the page of ``resources r`` rows that match ``query``.

    Selects :data:`fhirbots.engine.storage.sql.RESOURCE_COLUMNS`, sorted by ``_sort`` then by type
    and id (a stable order, so ``_count``/``_offset`` paging neither repeats nor skips).

    Args:
        query: The parsed query.
        project: Only resources of this project.
        dialect: ``sqlite`` or ``postgres`` (affects collation of text sorts).

    Returns:
        ``(sql, params)`` with ``?`` placeholders.

    Raises:
        UnsupportedSearchError: A clause or sort key cannot be compiled.
    """
    joins, join_params, order, order_params = _order_by(query, project, dialect)
    where, where_params = _where(query, project, dialect)
    params = [*join_params, *where_params]
    columns = ", ".join(f"r.{c.strip()}" for c in RESOURCE_COLUMNS.split(","))
    sql = f"SELECT {columns} FROM resources r {joins} WHERE {where} ORDER BY {order}"
    params.extend(order_params)
    if query.count is not None:
        sql += " LIMIT ? OFFSET ?"
        params.extend([query.count, query.offset])
    elif query.offset:
        sql += " LIMIT -1 OFFSET ?" if dialect == "sqlite" else " OFFSET ?"
        params.append(query.offset)
    return sql, params


def compile_count(
    query: SearchQuery, *, project: str, dialect: Dialect = "sqlite"
) -> tuple[str, list[Any]]:
    """SQL counting all resources that match ``query`` (for ``_total`` and ``_summary=count``).

    Args:
        query: The parsed query (sort and paging are ignored).
        project: Only resources of this project.
        dialect: ``sqlite`` or ``postgres``.

    Returns:
        ``(sql, params)`` with ``?`` placeholders.
    """
    where, params = _where(query, project, dialect)
    return f"SELECT COUNT(*) FROM resources r WHERE {where}", params


# --- includes ------------------------------------------------------------------------------


def include_statements(
    project: str, source_type: str, params: Sequence[str], source_ids: Sequence[str]
) -> list[tuple[str, list[Any]]]:
    """Statements selecting ``(ref_type, ref_id)`` of the references that the parameters
    ``params`` of the ``source_type`` resources ``source_ids`` hold (``_include``).

    Returns:
        ``(sql, params)`` pairs with ``?`` placeholders: one, or none when either list is empty.
    """
    if not params or not source_ids:
        return []
    statement = (
        "SELECT s.ref_type, s.ref_id FROM resources r JOIN search_reference s ON s.res = r.key"
        f" WHERE r.project = ? AND r.resource_type = ? AND r.id IN ({marks(len(source_ids))})"
        f" AND s.param IN ({marks(len(params))})"
        " AND s.ref_type IS NOT NULL AND s.ref_id IS NOT NULL"
    )
    return [(statement, [project, source_type, *source_ids, *params])]


def revinclude_statements(
    project: str, source_type: str, params: Sequence[str], targets: Iterable[tuple[str, str]]
) -> list[tuple[str, list[Any]]]:
    """Statements selecting ``(resource_type, id)`` of the ``source_type`` resources whose
    parameters ``params`` reference one of ``targets``, ``(type, id)`` pairs (``_revinclude``).

    Returns:
        ``(sql, params)`` pairs with ``?`` placeholders: one per target type, none when
        ``params`` or ``targets`` is empty.
    """
    by_type: dict[str, list[str]] = {}
    for target_type, target_id in targets:
        by_type.setdefault(target_type, []).append(target_id)
    if not params:
        return []
    statements: list[tuple[str, list[Any]]] = []
    for target_type, ids in sorted(by_type.items()):
        statement = (
            "SELECT r.resource_type, r.id FROM search_reference s JOIN resources r"
            f" ON r.key = s.res WHERE s.proj = {PROJECT_KEY} AND s.resource_type = ?"
            f" AND s.param IN ({marks(len(params))}) AND s.ref_type = ?"
            f" AND s.ref_id IN ({marks(len(ids))})"
        )
        statements.append((statement, [project, source_type, *params, target_type, *ids]))
    return statements
