"""SQLite adapter of the storage port: the embedded default, one file in the data dir.

Writes go through one writer thread that owns the only writing connection. It takes every
write waiting in its queue and commits them together (group commit): each write runs in its
own SAVEPOINT, so one that fails rolls back alone, and all of them share one fsync. Reads run on
a small pool of threads, each with its own connection; WAL mode lets them read while the
writer writes.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from engine.errors import FhirError
from engine.storage import sql
from engine.storage.model import (
    ApiKeyRecord,
    HistoryPage,
    OutboxRow,
    StoredResource,
    WriteContext,
    WriteOp,
    WriteResult,
)
from engine.storage.planner import format_instant, op_target, plan_write
from engine.storage.port import SearchIndexer
from schemas.events import CONFIG_TYPES

__all__ = ["SqliteStorage"]

T = TypeVar("T")

MAX_GROUP = 512
"""Writes committed together at most; bounds the latency one commit adds to the first write."""

READ_THREADS = 4
"""Reader connections; reads are short, so a few suffice for two cores."""

BUSY_TIMEOUT_MS = 10_000
"""How long a connection waits on another process's lock (workers may share the file)."""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode is durable against process crashes; an OS crash may lose the last
    # commits, never corrupt the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA cache_size = -65536")
    return conn


def _row_to_stored(row: Sequence[Any]) -> StoredResource:
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


@dataclass
class _Job:
    work: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.future = self.loop.create_future()

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        def _set() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(_set)


class _Writer(threading.Thread):
    """The one thread that writes; commits queued jobs in groups."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="sqlite-writer", daemon=True)
        self._path = path
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()

    def run(self) -> None:
        conn = _connect(self._path)
        try:
            while True:
                first = self.jobs.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < MAX_GROUP:
                    try:
                        nxt = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self.jobs.put(None)
                        break
                    batch.append(nxt)
                self._commit(conn, batch)
        finally:
            conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.work(conn)
                except Exception as exc:  # a failed write rolls back alone
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, result, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in batch:
                job.settle(error=exc)
            return
        for job, result, error in outcomes:
            job.settle(result, error)


class SqliteStorage:
    """The storage port on a SQLite file."""

    dialect = "sqlite"

    def __init__(self, path: Path, *, indexer: SearchIndexer | None = None) -> None:
        self._path = path
        self._indexer = indexer
        self._writer: _Writer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self._path)
        try:
            statements = sql.schema("sqlite")
            if self._indexer is not None:
                statements += self._indexer.ddl("sqlite")
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()
        self._writer = _Writer(self._path)
        self._writer.start()
        self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="sqlite-reader")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.jobs.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()

    # -- plumbing ---------------------------------------------------------------------------

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise RuntimeError("storage is not open")
        job = _Job(work, asyncio.get_running_loop())
        self._writer.jobs.put(job)
        result: T = await job.future
        return result

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self._path)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise RuntimeError("storage is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: work(self._reader()))

    # -- resources --------------------------------------------------------------------------

    async def apply(
        self, project: str, ops: Sequence[WriteOp], context: WriteContext
    ) -> list[WriteResult]:
        targets = [op_target(op) for op in ops]

        def work(conn: sqlite3.Connection) -> list[WriteResult]:
            return [
                self._apply_one(conn, project, op, target, context)
                for op, target in zip(ops, targets, strict=True)
            ]

        try:
            return await self._write(work)
        except sqlite3.Error as exc:
            raise FhirError(f"database error: {exc}") from exc

    def _apply_one(
        self,
        conn: sqlite3.Connection,
        project: str,
        op: WriteOp,
        target: tuple[str, str],
        context: WriteContext,
    ) -> WriteResult:
        row = conn.execute(sql.SELECT_CURRENT, (project, *target)).fetchone()
        current = _row_to_stored(row) if row is not None else None
        if target[0] in CONFIG_TYPES:
            found = conn.execute(sql.BUMP_GENERATION, (project,)).fetchone()
        else:
            found = conn.execute(sql.SELECT_GENERATION, (project,)).fetchone()
        generation = int(found[0]) if found is not None else 0
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
        conn.execute(sql.UPSERT_CURRENT, values)
        conn.execute(sql.INSERT_HISTORY, values)
        conn.execute(
            sql.INSERT_OUTBOX,
            (event.key, event.model_dump_json(), format_instant(event.time)),
        )
        if self._indexer is not None:
            for statement, rows in self._indexer.statements(
                "sqlite",
                project,
                stored.resource_type,
                stored.id,
                stored.content,
                indexed_before=current is not None,
            ):
                conn.executemany(statement, rows)
        return result

    async def read(
        self, project: str, resource_type: str, resource_id: str
    ) -> StoredResource | None:
        def work(conn: sqlite3.Connection) -> StoredResource | None:
            row = conn.execute(sql.SELECT_CURRENT, (project, resource_type, resource_id)).fetchone()
            return _row_to_stored(row) if row is not None else None

        return await self._read(work)

    async def vread(
        self, project: str, resource_type: str, resource_id: str, version_id: int
    ) -> StoredResource | None:
        def work(conn: sqlite3.Connection) -> StoredResource | None:
            row = conn.execute(
                sql.SELECT_VERSION, (project, resource_type, resource_id, version_id)
            ).fetchone()
            return _row_to_stored(row) if row is not None else None

        return await self._read(work)

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
        filters: list[Any] = [project]
        filters += [v for v in (resource_type, resource_id) if v is not None]
        if since is not None:
            filters.append(format_instant(since))
        shape = {
            "resource_type": resource_type is not None,
            "resource_id": resource_id is not None,
            "since": since is not None,
        }

        def work(conn: sqlite3.Connection) -> HistoryPage:
            total = conn.execute(sql.history_query(**shape, count_only=True), filters).fetchone()[0]
            rows = conn.execute(sql.history_query(**shape), [*filters, count, offset]).fetchall()
            return HistoryPage([_row_to_stored(r) for r in rows], int(total))

        return await self._read(work)

    async def count_by_type(self, project: str) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT resource_type, COUNT(*) FROM resources WHERE project = ? AND NOT deleted"
                " GROUP BY resource_type",
                (project,),
            ).fetchall()
            return {str(t): int(n) for t, n in rows}

        return await self._read(work)

    async def search(self, sql_text: str, params: Sequence[Any]) -> list[StoredResource]:
        def work(conn: sqlite3.Connection) -> list[StoredResource]:
            return [_row_to_stored(r) for r in conn.execute(sql_text, list(params)).fetchall()]

        return await self._read(work)

    async def search_rows(self, sql_text: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        def work(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sql_text, list(params)).fetchall()]

        return await self._read(work)

    async def search_count(self, sql_text: str, params: Sequence[Any]) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return int(conn.execute(sql_text, list(params)).fetchone()[0])

        return await self._read(work)

    # -- projects and keys ------------------------------------------------------------------

    async def ensure_project(self, project: str, name: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO projects (id, name, created) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (project, name, format_instant(datetime.now(UTC))),
            )
            return cursor.rowcount == 1

        return await self._write(work)

    async def add_api_key(
        self, project: str, key_hash: str, *, name: str, admin: bool = False
    ) -> ApiKeyRecord:
        record = ApiKeyRecord(str(uuid.uuid4()), project, name, admin, datetime.now(UTC))

        def work(conn: sqlite3.Connection) -> ApiKeyRecord:
            conn.execute(
                "INSERT INTO api_keys (id, project, name, key_hash, admin, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (record.id, project, name, key_hash, int(admin), format_instant(record.created)),
            )
            return record

        return await self._write(work)

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        def work(conn: sqlite3.Connection) -> ApiKeyRecord | None:
            row = conn.execute(
                "SELECT id, project, name, admin, created FROM api_keys WHERE key_hash = ?",
                (key_hash,),
            ).fetchone()
            if row is None:
                return None
            return ApiKeyRecord(
                row[0], row[1], row[2], bool(row[3]), datetime.fromisoformat(row[4])
            )

        return await self._read(work)

    # -- outbox -----------------------------------------------------------------------------

    async def outbox_pending(self, limit: int) -> list[OutboxRow]:
        def work(conn: sqlite3.Connection) -> list[OutboxRow]:
            rows = conn.execute(
                "SELECT seq, key, payload FROM outbox WHERE NOT published ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            return [OutboxRow(int(s), k, p.encode()) for s, k, p in rows]

        return await self._read(work)

    async def outbox_mark_published(self, seqs: Sequence[int]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE outbox SET published = 1 WHERE seq = ?", [(s,) for s in seqs])

        await self._write(work)

    async def outbox_purge(self, older_than: datetime) -> int:
        def work(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM outbox WHERE published AND created < ?", (format_instant(older_than),)
            )
            return cursor.rowcount

        return await self._write(work)
