"""Schema versions of the engine's stores, and the ordered migrations that make them.

Every store (the datastore, the delivery store, the bot store, the observatory store) has a
:class:`SchemaHistory`: its migrations numbered 1, 2, 3, ... Migration 1 creates the tables of
the first release that kept versions; a later release that changes a table appends a migration
(an ``ALTER TABLE``, a new index, a data fix) instead of editing an earlier one, so a database
of any earlier release is upgraded in place, step by step.

Which migrations a database has had is kept in its :data:`TABLE`, one row per store and
version. Migrating runs the missing steps in order, all in one transaction, under a lock that
serialises processes migrating at once (PostgreSQL's advisory lock; SQLite's write lock), so
a step is recorded exactly when its statements committed. A store opened without migrating
(:func:`require_current_sqlite`, :func:`require_current_postgres`) refuses a database that is
not at its latest version with :class:`SchemaNotMigrated`, which names ``fhirbots migrate``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fhirbots.engine.errors import FhirError

__all__ = [
    "LOCK",
    "TABLE",
    "Migration",
    "SchemaHistory",
    "SchemaNotMigrated",
    "fixed",
    "migrate_postgres",
    "migrate_sqlite",
    "require_current_postgres",
    "require_current_sqlite",
    "version_postgres",
    "version_sqlite",
]

Dialect = Literal["sqlite", "postgres"]

TABLE = "fhirbots_schema_migrations"
"""The version table every store's database holds: which migrations of which store ran."""

LOCK = 0x6668_6D67
"""PostgreSQL advisory lock id taken while migrating (one for every store: they share a table)."""

_CREATE = {
    "sqlite": f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        store TEXT NOT NULL, version INTEGER NOT NULL, summary TEXT NOT NULL,
        applied TEXT NOT NULL, PRIMARY KEY (store, version))""",
    "postgres": f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        store TEXT NOT NULL, version INTEGER NOT NULL, summary TEXT NOT NULL,
        applied TIMESTAMPTZ NOT NULL, PRIMARY KEY (store, version))""",
}


class SchemaNotMigrated(FhirError):
    """The database's schema is missing or older (or newer) than this fhirbots needs, and this
    process may not migrate it."""

    status = 503


@dataclass(frozen=True)
class Migration:
    """One step of a store's schema.

    Attributes:
        version: Its number: 1 for the first, each next one 1 more.
        summary: What it changes, recorded with it.
        statements: The statements of the step in a dialect (run in order, in the migration's
            transaction).
    """

    version: int
    summary: str
    statements: Callable[[Dialect], Sequence[str]]


def fixed(statements: Sequence[str]) -> Callable[[Dialect], Sequence[str]]:
    """The statements of a step written alike for both dialects."""

    def in_dialect(_: Dialect) -> Sequence[str]:
        return statements

    return in_dialect


@dataclass(frozen=True)
class SchemaHistory:
    """A store's migrations, in order.

    Attributes:
        store: The store's name in the version table (``"datastore"``, ``"delivery"``...).
        steps: Its migrations, numbered 1, 2, 3, ...
    """

    store: str
    steps: tuple[Migration, ...]

    def __post_init__(self) -> None:
        numbers = [step.version for step in self.steps]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"{self.store}: migrations must be numbered 1, 2, ...: {numbers}")

    @property
    def latest(self) -> int:
        """The version a database has once every step ran."""
        return len(self.steps)

    def pending(self, current: int) -> tuple[Migration, ...]:
        """The steps a database at ``current`` still needs, in order."""
        return self.steps[current:]

    def check(self, current: int) -> None:
        """Refuse a database not at :attr:`latest`.

        Raises:
            SchemaNotMigrated: naming the versions and what to do.
        """
        if current == self.latest:
            return
        if current > self.latest:
            raise SchemaNotMigrated(
                f"the {self.store} schema is at version {current}, newer than this fhirbots "
                f"knows ({self.latest}): run the newer release"
            )
        found = "missing" if current == 0 else f"at version {current}"
        raise SchemaNotMigrated(
            f"the {self.store} schema is {found}, this fhirbots needs version {self.latest}: "
            "run `fhirbots migrate` first"
        )


# -- SQLite ----------------------------------------------------------------------------------


def version_sqlite(conn: sqlite3.Connection, history: SchemaHistory) -> int:
    """The version of ``history``'s store in an SQLite database (0 when it has none)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute(
        f"SELECT COALESCE(MAX(version), 0) FROM {TABLE} WHERE store = ?", (history.store,)
    ).fetchone()
    return int(row[0])


def migrate_sqlite(
    conn: sqlite3.Connection,
    history: SchemaHistory,
    *,
    before: Callable[[sqlite3.Connection, int], None] | None = None,
) -> list[Migration]:
    """Run the steps an SQLite database still needs, in one transaction; the steps run.

    Args:
        conn: A connection not in a transaction; its write lock is held from the first read,
            so processes migrating one file at once run the steps once.
        history: The store's migrations.
        before: Called with the connection and the version found, inside the transaction,
            before any step runs (a store's own check of what it finds).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE["sqlite"])
        current = version_sqlite(conn, history)
        if current > history.latest:
            history.check(current)
        if before is not None:
            before(conn, current)
        steps = history.pending(current)
        now = datetime.now(UTC).isoformat()
        for step in steps:
            for statement in step.statements("sqlite"):
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO {TABLE} (store, version, summary, applied) VALUES (?, ?, ?, ?)",
                (history.store, step.version, step.summary, now),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return list(steps)


def require_current_sqlite(conn: sqlite3.Connection, history: SchemaHistory) -> None:
    """Refuse an SQLite database not at ``history``'s latest version."""
    history.check(version_sqlite(conn, history))


# -- PostgreSQL ------------------------------------------------------------------------------


async def version_postgres(conn: Any, history: SchemaHistory) -> int:
    """The version of ``history``'s store in a PostgreSQL database (0 when it has none), in
    the connection's search path."""
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE):
        return 0
    return int(
        await conn.fetchval(
            f"SELECT COALESCE(MAX(version), 0) FROM {TABLE} WHERE store = $1", history.store
        )
    )


async def migrate_postgres(
    conn: Any,
    history: SchemaHistory,
    *,
    before: Callable[[Any, int], Any] | None = None,
) -> list[Migration]:
    """Run the steps a PostgreSQL database still needs, in one transaction holding
    :data:`LOCK`; the steps run.

    Args:
        conn: An asyncpg connection, not in a transaction.
        history: The store's migrations.
        before: Awaited with the connection and the version found, inside the transaction,
            before any step runs (a store's own check of what it finds).
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
        await conn.execute(_CREATE["postgres"])
        current = await version_postgres(conn, history)
        if current > history.latest:
            history.check(current)
        if before is not None:
            await before(conn, current)
        steps = history.pending(current)
        for step in steps:
            for statement in step.statements("postgres"):
                await conn.execute(statement)
            await conn.execute(
                f"INSERT INTO {TABLE} (store, version, summary, applied) VALUES ($1, $2, $3, $4)",
                history.store,
                step.version,
                step.summary,
                datetime.now(UTC),
            )
    return list(steps)


async def require_current_postgres(conn: Any, history: SchemaHistory) -> None:
    """Refuse a PostgreSQL database not at ``history``'s latest version."""
    history.check(await version_postgres(conn, history))
