"""``fhirbots migrate``: create or upgrade the schema of every store, and say what it did.

In distributed mode (PostgreSQL) this is the only thing that changes the schema: ``serve`` and
the workers refuse to start on missing or old tables (``FHIRBOTS_AUTO_MIGRATE`` unset or
``false``), so that one step (a Helm hook Job, a compose service run before the rest)
upgrades the database before the new release starts, and processes of two releases never
race to change it. Embedded mode migrates on start; the command works there too.

``--check`` only reports: it exits 1 when a store is not at its latest version.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

from fhirbots.engine.automation import store_sql as bot_sql
from fhirbots.engine.automation.runtime import create_bot_store
from fhirbots.engine.automation.store_sqlite import BOTS_DB
from fhirbots.engine.delivery import store_sql as delivery_sql
from fhirbots.engine.delivery.factory import create_delivery_store
from fhirbots.engine.delivery.store_sqlite import DELIVERY_DB
from fhirbots.engine.observatory import store_sql as observatory_sql
from fhirbots.engine.observatory.factory import create_observatory_store
from fhirbots.engine.observatory.store_sqlite import OBSERVATORY_DB
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage import sql as datastore_sql
from fhirbots.engine.storage.factory import create_storage
from fhirbots.engine.storage.migrations import SchemaHistory, version_postgres, version_sqlite
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.schemas.errors import FhirbotsError

__all__ = ["add_command", "histories", "schema_versions"]

NOT_CURRENT_STATUS = 1
"""Exit status of ``--check`` when a store is not at its latest version, and of a failure."""


def histories() -> dict[str, SchemaHistory]:
    """Every store's migrations, by store name."""
    return {
        "datastore": datastore_sql.history(SqlSearchIndexer().ddl),
        "delivery": delivery_sql.HISTORY,
        "bots": bot_sql.HISTORY,
        "observatory": observatory_sql.HISTORY,
    }


def _sqlite_files(settings: Settings) -> dict[str, Path]:
    return {
        "datastore": settings.sqlite_path,
        "delivery": settings.data_dir / DELIVERY_DB,
        "bots": settings.data_dir / BOTS_DB,
        "observatory": settings.data_dir / OBSERVATORY_DB,
    }


async def schema_versions(settings: Settings) -> dict[str, int]:
    """The version each store's database is at (0: no tables yet)."""
    found: dict[str, int] = {}
    if settings.database_url:
        import asyncpg

        conn = await asyncpg.connect(settings.database_url)
        try:
            for name, history in histories().items():
                found[name] = await version_postgres(conn, history)
        finally:
            await conn.close()
        return found
    files = _sqlite_files(settings)
    for name, history in histories().items():
        path = files[name]
        if not path.exists():
            found[name] = 0
            continue
        with closing(sqlite3.connect(path)) as conn:
            found[name] = version_sqlite(conn, history)
    return found


async def migrate(settings: Settings) -> None:
    """Open every store with migrating on (each runs the steps it still needs), then close."""
    migrating = settings.with_overrides(auto_migrate=True)
    storage = create_storage(migrating, indexer=SqlSearchIndexer())
    delivery = create_delivery_store(migrating)
    bots = create_bot_store(migrating)
    observatory = create_observatory_store(migrating.database_url, migrating.data_dir)
    for store in (storage, delivery, bots, observatory):
        await store.open()
        await store.close()


async def _run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env().with_overrides(data_dir=args.data_dir)
    except ValueError as exc:
        print(f"fhirbots: {exc}", file=sys.stderr)
        return 2
    where = "PostgreSQL" if settings.database_url else f"SQLite files in {settings.data_dir}"
    try:
        before = await schema_versions(settings)
        if not args.check:
            await migrate(settings)
        after = await schema_versions(settings) if not args.check else before
    except (FhirbotsError, OSError) as exc:
        print(f"fhirbots migrate: {exc}", file=sys.stderr)
        return NOT_CURRENT_STATUS
    except Exception as exc:  # the driver's own errors (refused login, unknown database)
        print(f"fhirbots migrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return NOT_CURRENT_STATUS
    latest = {name: history.latest for name, history in histories().items()}
    print(f"schema of {where}:")
    for name, version in after.items():
        change = f"{before[name]} -> {version}" if before[name] != version else f"{version}"
        state = "current" if version == latest[name] else f"needs {latest[name]}"
        print(f"  {name:<12} version {change} ({state})")
    return 0 if after == latest else NOT_CURRENT_STATUS


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fhirbots migrate`` to the command line."""
    command = sub.add_parser(
        "migrate",
        help="create or upgrade the schema of every store (the only way in distributed mode)",
    )
    command.add_argument("--data-dir", type=Path, help="data directory (FHIRBOTS_DATA_DIR)")
    command.add_argument(
        "--check",
        action="store_true",
        help="only report each store's version; exit 1 when one is not current",
    )
    command.set_defaults(run=_run)
