"""``fhirbots backup DEST``: an online copy of the embedded engine's data dir.

Each SQLite file is copied with SQLite's backup API in one step: a consistent snapshot of that
file, taken while the engine goes on writing (in WAL mode readers never block the writer).
The files are copied in flow order, the datastore first and the event log next: a change
committed after the datastore's copy may have its event in the log's copy, never the other
way round, so a restored engine may publish an event twice but never loses one. A restore is
starting the engine on the copy (``fhirbots serve --data-dir DEST``).

Distributed mode keeps its data in PostgreSQL and Kafka; back those up with their own tools
(docs/operations.md, "Backups").
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

from tqdm import tqdm

from fhirbots.engine.automation.store_sqlite import BOTS_DB
from fhirbots.engine.delivery.store_sqlite import DELIVERY_DB
from fhirbots.engine.eventlog.embedded import LOG_FILE_NAME
from fhirbots.engine.observatory.store_sqlite import OBSERVATORY_DB
from fhirbots.engine.runtime import ADMIN_KEY_FILE
from fhirbots.engine.settings import Settings

__all__ = ["add_command", "backup", "backup_files"]

USAGE_STATUS = 2
"""Exit status when there is nothing this command can back up, or the target is in use."""


def backup_files(settings: Settings) -> list[Path]:
    """The SQLite files of the data dir, in the order they are copied."""
    data = settings.data_dir
    return [
        settings.sqlite_path,
        data / LOG_FILE_NAME,
        data / DELIVERY_DB,
        data / BOTS_DB,
        data / OBSERVATORY_DB,
    ]


def _copy_database(source: Path, target: Path) -> None:
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)  # one step: a snapshot, however much the engine writes meanwhile
    target.chmod(0o600)


def backup(settings: Settings, target: Path, *, progress: bool = True) -> list[Path]:
    """Copy the data dir of ``settings`` to ``target`` (new or empty); the files written.

    Raises:
        FileExistsError: ``target`` holds files already.
        FileNotFoundError: the data dir holds no datastore.
    """
    if not settings.sqlite_path.exists():
        raise FileNotFoundError(f"no embedded datastore in {settings.data_dir}")
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty")
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    sources = [path for path in backup_files(settings) if path.exists()]
    written: list[Path] = []
    for source in tqdm(sources, desc="backup", unit="file", disable=not progress):
        copy = target / source.name
        _copy_database(source, copy)
        written.append(copy)
    token = settings.data_dir / ADMIN_KEY_FILE
    if token.exists():
        shutil.copy2(token, target / ADMIN_KEY_FILE)
        (target / ADMIN_KEY_FILE).chmod(0o600)
        written.append(target / ADMIN_KEY_FILE)
    return written


async def _run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env().with_overrides(data_dir=args.data_dir)
    except ValueError as exc:
        print(f"fhirbots: {exc}", file=sys.stderr)
        return USAGE_STATUS
    if settings.database_url:
        print(
            "fhirbots backup: the data is in PostgreSQL (FHIRBOTS_DATABASE_URL); back it up "
            "with pg_dump or a base backup (docs/operations.md, Backups)",
            file=sys.stderr,
        )
        return USAGE_STATUS
    try:
        written = backup(settings, args.target, progress=sys.stderr.isatty())
    except (FileExistsError, FileNotFoundError, sqlite3.Error) as exc:
        print(f"fhirbots backup: {exc}", file=sys.stderr)
        return USAGE_STATUS
    size = sum(path.stat().st_size for path in written)
    print(f"backed up {len(written)} files ({size} bytes) to {args.target}")
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fhirbots backup`` to the command line."""
    command = sub.add_parser(
        "backup", help="copy the embedded engine's data dir while it runs (online backup)"
    )
    command.add_argument("target", type=Path, help="a new or empty directory")
    command.add_argument("--data-dir", type=Path, help="data directory (FHIRBOTS_DATA_DIR)")
    command.set_defaults(run=_run)
