"""The writing side of the SQLite datastore: what one group commit does, on one connection.

:class:`fhirbots.engine.storage.sqlite.SqliteStorage` hands writes to a single writer that commits
them in groups. The writer is a process by default (:func:`serve`), so that committing (index rows,
change events, SQLite's own work) runs on another core than the HTTP API instead of competing
with it for one interpreter lock; it can also be a thread of the engine's process. Both run
:func:`commit_group` on requests that are plain, picklable values.
"""

from __future__ import annotations

import pickle
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from fhirbots.bots.lifeline import follow_parent
from fhirbots.engine.storage import sql
from fhirbots.engine.storage.model import (
    ApiKeyRecord,
    IndexOwner,
    StoredResource,
    WriteContext,
    WriteOp,
    WriteResult,
)
from fhirbots.engine.storage.planner import format_instant, plan_write
from fhirbots.engine.storage.port import SearchIndexer
from fhirbots.engine.storage.search_index import REINDEX_BATCH
from fhirbots.schemas.events import CONFIG_TYPES

__all__ = [
    "BUSY_TIMEOUT_MS",
    "Checkpointer",
    "Outcome",
    "Request",
    "commit_group",
    "connect",
    "connect_writer",
    "row_to_stored",
    "serve",
]

BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits on another process's lock (workers may share the file)."""

CACHE_KIB = 65_536
"""Page cache per connection (64 MiB): the index B-trees' hot pages stay in memory."""


def connect(path: Path) -> sqlite3.Connection:
    """A connection with the datastore's pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode is durable against process crashes; an OS crash may lose the last
    # commits, never corrupt the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    # Journals of savepoints and statements (the pages they change) stay in memory rather than
    # in a temporary file made, written and deleted by every group commit: that cut the
    # writer's CPU per create by about a third (most of it system time).
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


CHECKPOINT_INTERVAL_SECONDS = 0.05
"""How long the checkpointer lets committed pages gather in the WAL before it copies them into
the database file; a page written again within it is copied once."""

WRITER_AUTOCHECKPOINT_PAGES = 20_000
"""WAL pages (80 MiB) past which the writer checkpoints by itself, should the checkpointer
fall behind; SQLite's own default is 1,000, checkpointing in nearly every large commit."""


class Checkpointer:
    """Copies the WAL back into the database file on a thread of its own, with its own
    connection, so that the writer's commits do not.

    Left to SQLite, the committing connection checkpoints whenever the WAL passes 1,000 pages:
    about half of the writer's COMMIT time for Synthea transactions. A PASSIVE checkpoint here
    runs beside the writer (SQLite lets one writer append to the WAL during a checkpoint) on the
    other core, with the interpreter lock released.
    """

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """The writer committed: checkpoint soon."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            if not self._stopping:
                time.sleep(CHECKPOINT_INTERVAL_SECONDS)
            self._wake.clear()
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:  # the writer's own checkpoints are the backstop
                print(f"sqlite checkpoint failed: {exc}", file=sys.stderr)

    def close(self) -> None:
        """Stop the thread (after a last checkpoint) and close its connection."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._conn.close()


def connect_writer(path: Path) -> tuple[sqlite3.Connection, Checkpointer]:
    """The writing connection, and the checkpointer that takes checkpoints off its commits."""
    conn = connect(path)
    conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES}")
    return conn, Checkpointer(path)


def row_to_stored(row: Sequence[Any]) -> StoredResource:
    """A ``RESOURCE_COLUMNS`` row as a :class:`StoredResource`."""
    resource_type, resource_id, version, updated, deleted, content = row
    return StoredResource(
        resource_type=resource_type,
        id=resource_id,
        version_id=int(version),
        last_updated=datetime.fromisoformat(updated),
        deleted=bool(deleted),
        content=orjson.loads(content) if content is not None else None,
    )


def _dump(content: dict[str, Any] | None) -> str | None:
    return orjson.dumps(content).decode() if content is not None else None


@dataclass(frozen=True)
class _Writes:
    conn: sqlite3.Connection
    indexer: SearchIndexer | None

    def apply(
        self,
        project: str,
        ops: Sequence[WriteOp],
        targets: Sequence[tuple[str, str]],
        context: WriteContext,
    ) -> list[WriteResult]:
        context.check_deadline()
        results = [
            self._apply_one(project, op, target, context)
            for op, target in zip(ops, targets, strict=True)
        ]
        context.check_deadline()  # past it, the group rolls this write back alone
        return results

    def _apply_one(
        self,
        project: str,
        op: WriteOp,
        target: tuple[str, str],
        context: WriteContext,
    ) -> WriteResult:
        conn = self.conn
        row = conn.execute(sql.SELECT_CURRENT, (project, *target)).fetchone()
        current = row_to_stored(row) if row is not None else None
        if target[0] in CONFIG_TYPES:
            found = conn.execute(sql.BUMP_GENERATION, (project,)).fetchone()
        else:
            found = conn.execute(sql.SELECT_GENERATION, (project,)).fetchone()
        generation = int(found[0]) if found is not None else 0
        if self.indexer is not None and self.indexer.stale(project, generation):
            defined = conn.execute(sql.live_of_types(1), (project, "SearchParameter")).fetchall()
            self.indexer.define(project, generation, [orjson.loads(r[5]) for r in defined if r[5]])
        result = plan_write(
            op, target, current, project=project, context=context, generation=generation
        )
        stored, event = result.stored, result.event
        if event is None or stored is None:
            return result
        values = (
            project,
            stored.resource_type,
            stored.id,
            stored.version_id,
            format_instant(stored.last_updated),
            int(stored.deleted),
            _dump(stored.content),
        )
        resource_key, project_key = conn.execute(sql.UPSERT_CURRENT, values).fetchone()
        if project_key is None:  # the first write of a project never registered
            self.ensure_project(project, project)
            project_key = conn.execute(sql.SELECT_PROJECT_KEY, (project,)).fetchone()[0]
        conn.execute(sql.INSERT_HISTORY, values)
        conn.execute(
            sql.INSERT_OUTBOX,
            (event.key, event.model_dump_json(), format_instant(event.time)),
        )
        if self.indexer is not None:
            for statement, rows in self.indexer.statements(
                "sqlite",
                IndexOwner(resource_key, project_key, stored.resource_type),
                stored.content,
                indexed_before=current is not None,
                project=project,
            ):
                conn.executemany(statement, rows)
        return result

    def ensure_project(self, project: str, name: str) -> bool:
        cursor = self.conn.execute(
            sql.INSERT_PROJECT, (project, name, format_instant(datetime.now(UTC)))
        )
        return cursor.rowcount == 1

    def add_api_key(
        self, project: str, key_hash: str, name: str, admin: bool, scope: str | None = None
    ) -> ApiKeyRecord:
        record = ApiKeyRecord(str(uuid.uuid4()), project, name, admin, datetime.now(UTC), scope)
        self.conn.execute(
            sql.INSERT_KEY,
            (record.id, project, name, key_hash, int(admin), format_instant(record.created)),
        )
        if scope is not None:
            self.conn.execute(sql.INSERT_KEY_SCOPE, (record.id, scope))
        return record

    def revoke_api_key(self, key_id: str, when: str) -> bool:
        return self.conn.execute(sql.REVOKE_KEY, (key_id, when)).rowcount == 1

    def touch_api_key(self, key_id: str, when: str, unless_after: str) -> None:
        self.conn.execute(sql.TOUCH_KEY, (key_id, when, unless_after))

    def outbox_mark_published(self, seqs: Sequence[int]) -> None:
        if seqs:
            self.conn.execute(sql.SQLITE_OUTBOX_MARK, (max(seqs),))

    def outbox_purge(self, older_than: str) -> int:
        return self.conn.execute(sql.SQLITE_OUTBOX_PURGE, (older_than,)).rowcount

    def reindex(
        self, project: str, resource_type: str, after: str, limit: int
    ) -> tuple[int, str | None]:
        conn, indexer = self.conn, self.indexer
        rows = conn.execute(REINDEX_BATCH, (project, resource_type, after, limit)).fetchall()
        if indexer is None or not rows:
            return len(rows), rows[-1][1] if rows else None
        project_key = conn.execute(sql.SELECT_PROJECT_KEY, (project,)).fetchone()[0]
        found = conn.execute(sql.SELECT_GENERATION, (project,)).fetchone()
        generation = int(found[0]) if found is not None else 0
        if indexer.stale(project, generation):
            defined = conn.execute(sql.live_of_types(1), (project, "SearchParameter")).fetchall()
            indexer.define(project, generation, [orjson.loads(r[5]) for r in defined if r[5]])
        for key, _, content in rows:
            owner = IndexOwner(key, project_key, resource_type)
            for statement, params in indexer.statements(
                "sqlite", owner, orjson.loads(content), project=project
            ):
                conn.executemany(statement, params)
        return len(rows), rows[-1][1]


Request = tuple[str, tuple[Any, ...]]
"""A write: the name of a write function (``apply``, ``ensure_project``, ``add_api_key``,
``outbox_mark_published``, ``outbox_purge``) and its arguments."""

Outcome = tuple[Any, BaseException | None]
"""A write's result, or the error that rolled it back."""

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    name: getattr(_Writes, name)
    for name in (
        "apply",
        "ensure_project",
        "add_api_key",
        "revoke_api_key",
        "touch_api_key",
        "outbox_mark_published",
        "outbox_purge",
        "reindex",
    )
}


def commit_group(
    conn: sqlite3.Connection, indexer: SearchIndexer | None, requests: Sequence[Request]
) -> list[Outcome]:
    """Run ``requests`` in one transaction with one commit; a write that fails rolls back alone.

    A group first runs without savepoints: inside one, SQLite keeps a copy of every page it
    changes, which cost the writer about a fifth of its time per resource, and nearly every
    group succeeds whole. If a write fails, that attempt is rolled back and the group runs
    again with each write in its own SAVEPOINT (:func:`_commit_isolated`), so the failing
    write rolls back alone and the others commit.

    Raises:
        sqlite3.Error: the transaction itself failed (nothing was written).
    """
    writes = _Writes(conn, indexer)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [_FUNCTIONS[name](writes, *args) for name, args in requests]
        except Exception as exc:  # some write failed: none of this attempt is kept
            if indexer is not None:
                indexer.forget()  # parameters it defined may come from the rolled back writes
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(requests) == 1:  # the rollback was that write's own: nothing to run again
                return [(None, exc)]
            return _commit_isolated(conn, writes, requests)
        conn.execute("COMMIT")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return [(result, None) for result in results]


def _commit_isolated(
    conn: sqlite3.Connection, writes: _Writes, requests: Sequence[Request]
) -> list[Outcome]:
    """The group again, each write in its own SAVEPOINT: the failing ones roll back alone."""
    outcomes: list[Outcome] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for name, args in requests:
            conn.execute("SAVEPOINT job")
            try:
                result = _FUNCTIONS[name](writes, *args)
            except Exception as exc:  # a failed write rolls back alone
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((None, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((result, None))
        conn.execute("COMMIT")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _picklable(reply: list[Outcome] | BaseException) -> list[Outcome] | BaseException:
    """``reply`` with any error that would not survive pickling replaced by a RuntimeError
    carrying its text (a custom exception with required arguments, say)."""

    def safe(error: BaseException) -> BaseException:
        try:
            pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes, just made)
        except Exception:
            return RuntimeError(f"{type(error).__name__}: {error}")
        return error

    if isinstance(reply, BaseException):
        return safe(reply)
    return [(result, safe(error) if error is not None else None) for result, error in reply]


def serve(path: Path, channel: Connection, indexer: SearchIndexer | None) -> None:
    """The writer process: receive groups of requests, commit each, send back the outcomes
    (or the error of the whole group); ends on None or when the engine's end closes."""
    # Ctrl-C reaches the whole process group: the engine decides when its writer stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn, checkpointer = connect_writer(path)
    try:
        while True:
            try:
                requests = channel.recv()
            except EOFError:
                return
            if requests is None:
                return
            try:
                reply: list[Outcome] | BaseException = commit_group(conn, indexer, requests)
            except sqlite3.Error as exc:
                reply = exc
            channel.send(_picklable(reply))
            checkpointer.committed()
    finally:
        checkpointer.close()
        conn.close()


def main(argv: Sequence[str]) -> None:
    """``python -m fhirbots.engine.storage.sqlite_writes FD [ENGINE_PID]``: serve the engine on
    the socket ``FD``, ending with the engine (:mod:`fhirbots.bots.lifeline`); the first message
    is ``(database path, search indexer)``."""
    if len(argv) > 1:
        follow_parent(int(argv[1]))
    channel = Connection(int(argv[0]))
    try:
        path, indexer = channel.recv()
    except EOFError:
        return
    serve(Path(path), channel, indexer)


if __name__ == "__main__":
    main(sys.argv[1:])
