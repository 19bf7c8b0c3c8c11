"""SQLite adapter of the storage port: the embedded default, one file in the data dir.

Writes go to one writer that owns the only writing connection. A thread of the engine collects
every write waiting in its queue and has them committed together (group commit): each runs in
its own SAVEPOINT, so one that fails rolls back alone, and all of them share one commit. The
committing itself (:mod:`fhirbots.engine.storage.sqlite_writes`) runs in a writer process by
default, on
another core than the API; ``writer_process=False`` keeps it on the thread. Reads run on a
small pool of threads, each with its own connection; WAL mode lets them read while the writer
writes.

SQLite's errors, and the operating system's (a folder that cannot be made, a writer process
that cannot start), leave the adapter as ``DatastoreUnavailable``, the cause chained; the
planner's own errors (a ``Conflict``, a ``PreconditionFailed``) pass as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import structlog

import fhirbots
from fhirbots.engine.errors import DatastoreUnavailable
from fhirbots.engine.storage import sql
from fhirbots.engine.storage.migrations import migrate_sqlite, require_current_sqlite
from fhirbots.engine.storage.model import (
    ApiKeyRecord,
    HistoryPage,
    OutboxRow,
    ProjectRecord,
    SearchPage,
    StoredResource,
    WriteContext,
    WriteOp,
    WriteResult,
)
from fhirbots.engine.storage.planner import format_instant, op_target
from fhirbots.engine.storage.port import SearchIndexer
from fhirbots.engine.storage.references import existing_statements, referrers_statements
from fhirbots.engine.storage.search_index import (
    compile_count,
    compile_search,
    include_statements,
    revinclude_statements,
)
from fhirbots.engine.storage.sqlite_writes import (
    Outcome,
    Request,
    commit_group,
    connect,
    connect_writer,
    row_to_stored,
)
from fhirbots.subscriptions.search import SearchQuery

__all__ = ["SqliteStorage", "WriterStopped"]

T = TypeVar("T")

log = structlog.get_logger(__name__)

MAX_GROUP = 512
"""Writes committed together at most; bounds the latency one commit adds to the first write."""

_PACKAGE_ROOT = str(Path(fhirbots.__file__).parent.parent)
"""The folder holding the ``fhirbots`` package, so the writer process imports this very code."""

READ_THREADS = 4
"""Reader connections; reads are short, so a few suffice for two cores."""


def _key_record(row: Sequence[Any]) -> ApiKeyRecord:
    def instant(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)

    key_id, project, name, admin, created, scope, last_used, revoked = row
    return ApiKeyRecord(
        key_id,
        project,
        name,
        bool(admin),
        datetime.fromisoformat(created),
        scope,
        instant(last_used),
        instant(revoked),
    )


class WriterStopped(DatastoreUnavailable):
    """The writer process ended while it held writes: they may or may not have committed."""


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Raise SQLite's and the operating system's errors as :class:`DatastoreUnavailable`."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise DatastoreUnavailable(f"datastore unavailable: {exc}") from exc


@dataclass
class _Job:
    request: Request
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
    """Takes queued writes in groups and has each group committed."""

    def __init__(self, path: Path, indexer: SearchIndexer | None, *, process: bool) -> None:
        super().__init__(name="sqlite-writer", daemon=True)
        self._path = path
        self._indexer = indexer
        self._process_mode = process
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: Connection | None = None
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()

    def start_process(self) -> None:
        """Start the writer process (process mode); it opens its own connection.

        A fresh interpreter runs :mod:`fhirbots.engine.storage.sqlite_writes` with one end of a
        socket
        pair; nothing of this process (its ``__main__``, threads or other files) is inherited.
        """
        if not self._process_mode or self._process is not None:
            return
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        with theirs:
            self._process = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
                [
                    sys.executable,
                    "-m",
                    "fhirbots.engine.storage.sqlite_writes",
                    str(theirs.fileno()),
                    str(os.getpid()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self._channel = Connection(ours.detach())
        self._channel.send((str(self._path), self._indexer))

    def _stop_process(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(OSError):
                self._channel.send(None)
            self._channel.close()
        if self._process is not None:
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process, self._channel = None, None

    def _remote(self, requests: list[Request]) -> list[Outcome]:
        if self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            log.error("sqlite writer process ended while idle; starting another", exitcode=code)
            self._stop_process()
        if self._channel is None:
            self.start_process()
        assert self._channel is not None
        try:
            self._channel.send(requests)
            reply: list[Outcome] | BaseException = self._channel.recv()
        except (EOFError, OSError) as exc:
            code = self._process.poll() if self._process is not None else None
            log.error("sqlite writer process stopped", exitcode=code, error=str(exc))
            self._stop_process()  # the next group starts a new one
            raise WriterStopped(
                "the database writer stopped during the commit; the write may not have been stored"
            ) from exc
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def run(self) -> None:
        conn, checkpointer = (None, None) if self._process_mode else connect_writer(self._path)
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
                # A write whose caller gave up (a bot execution that ended) is not committed.
                batch = [job for job in batch if not job.future.cancelled()]
                if not batch:
                    continue
                requests = [job.request for job in batch]
                try:
                    if conn is not None:
                        outcomes = commit_group(conn, self._indexer, requests)
                    else:
                        outcomes = self._remote(requests)
                except Exception as exc:  # the whole group failed: each write hears why
                    for job in batch:
                        job.settle(error=exc)
                    continue
                for job, (result, error) in zip(batch, outcomes, strict=True):
                    job.settle(result, error)
                if checkpointer is not None:
                    checkpointer.committed()
        finally:
            if checkpointer is not None:
                checkpointer.close()
            if conn is not None:
                conn.close()
            self._stop_process()


def _check_unversioned(conn: sqlite3.Connection, version: int) -> None:
    """Before the first migration: refuse tables of a release older than the one whose
    schema migration 1 is (another layout, which is not upgraded in place)."""
    if version == 0:
        has_resources = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'resources'"
        ).fetchone()
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        sql.check_schema_version(found, has_resources is not None)


class SqliteStorage:
    """The storage port on a SQLite file.

    Args:
        path: The database file.
        indexer: Keeps the search index tables in step with each write.
        writer_process: Commit in a writer process (the default) rather than on a thread of
            this process.
    """

    dialect = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        indexer: SearchIndexer | None = None,
        writer_process: bool = True,
        migrate: bool = True,
    ) -> None:
        self._path = path
        self._indexer = indexer
        self._writer_process = writer_process
        self._migrate = migrate
        self._writer: _Writer | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._exclusive: dict[tuple[str, str], asyncio.Lock] = {}

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    async def open(self) -> None:
        with _translated():
            await self._open()

    async def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self._path)
        try:
            history = sql.history(self._indexer.ddl if self._indexer is not None else None)
            if self._migrate:
                migrate_sqlite(conn, history, before=_check_unversioned)
                conn.execute(f"PRAGMA user_version = {sql.SCHEMA_VERSION}")
            else:
                require_current_sqlite(conn, history)
        finally:
            conn.close()
        writer = _Writer(self._path, self._indexer, process=self._writer_process)
        await asyncio.to_thread(writer.start_process)
        writer.start()
        self._writer = writer
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

    async def _write(self, name: str, *args: Any) -> Any:
        """Run the write function ``name`` (see :data:`sqlite_writes.Request`) in a group."""
        if self._writer is None:
            raise RuntimeError("storage is not open")
        job = _Job((name, args), asyncio.get_running_loop())
        self._writer.jobs.put(job)
        with _translated():
            return await job.future

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path)
            self._local.conn = conn
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise RuntimeError("storage is not open")
        loop = asyncio.get_running_loop()
        with _translated():
            return await loop.run_in_executor(self._readers, lambda: work(self._reader()))

    # -- resources --------------------------------------------------------------------------

    async def apply(
        self, project: str, ops: Sequence[WriteOp], context: WriteContext
    ) -> list[WriteResult]:
        targets = [op_target(op) for op in ops]
        results: list[WriteResult] = await self._write(
            "apply", project, list(ops), targets, context
        )
        return results

    async def read(
        self, project: str, resource_type: str, resource_id: str
    ) -> StoredResource | None:
        def work(conn: sqlite3.Connection) -> StoredResource | None:
            row = conn.execute(sql.SELECT_CURRENT, (project, resource_type, resource_id)).fetchone()
            return row_to_stored(row) if row is not None else None

        return await self._read(work)

    async def vread(
        self, project: str, resource_type: str, resource_id: str, version_id: int
    ) -> StoredResource | None:
        def work(conn: sqlite3.Connection) -> StoredResource | None:
            row = conn.execute(
                sql.SELECT_VERSION, (project, resource_type, resource_id, version_id)
            ).fetchone()
            return row_to_stored(row) if row is not None else None

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
        count_sql, page_sql, filters = sql.history_query(
            project, resource_type, resource_id, format_instant(since) if since else None
        )

        def work(conn: sqlite3.Connection) -> HistoryPage:
            total = conn.execute(count_sql, filters).fetchone()[0]
            rows = conn.execute(page_sql, [*filters, count, offset]).fetchall()
            return HistoryPage([row_to_stored(r) for r in rows], int(total))

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

    async def _resources(self, statement: str, params: Sequence[Any]) -> list[StoredResource]:
        def work(conn: sqlite3.Connection) -> list[StoredResource]:
            return [row_to_stored(r) for r in conn.execute(statement, list(params)).fetchall()]

        return await self._read(work)

    async def _pairs(self, statements: list[tuple[str, list[Any]]]) -> set[tuple[str, str]]:
        def work(conn: sqlite3.Connection) -> set[tuple[str, str]]:
            return {
                (str(a), str(b))
                for statement, params in statements
                for a, b in conn.execute(statement, params).fetchall()
            }

        return await self._read(work) if statements else set()

    async def current_resources(self, project: str, *resource_types: str) -> list[StoredResource]:
        if not resource_types:
            return []
        found = await self._resources(
            sql.live_of_types(len(resource_types)), [project, *resource_types]
        )
        return sorted(found, key=lambda r: (r.resource_type, r.id))

    async def current_by_ids(
        self, project: str, resource_type: str, ids: Sequence[str]
    ) -> list[StoredResource]:
        if not ids:
            return []
        found = await self._resources(sql.live_by_ids(len(ids)), [project, resource_type, *ids])
        return sorted(found, key=lambda r: r.id)

    async def current_ids_everywhere(self, resource_type: str) -> list[tuple[str, str]]:
        def work(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(sql.SELECT_LIVE_IDS_EVERYWHERE, (resource_type,)).fetchall()
            return sorted((str(p), str(i)) for p, i in rows)

        return await self._read(work)

    async def search(
        self, project: str, query: SearchQuery, *, max_bytes: int | None = None
    ) -> list[StoredResource]:
        statement, params = compile_search(query, project=project, dialect="sqlite")
        if max_bytes is None:
            return await self._resources(statement, params)
        limit = max_bytes

        def work(conn: sqlite3.Connection) -> list[StoredResource]:
            page = SearchPage()
            for row in conn.execute(statement, list(params)):  # a cursor: row by row
                if page.take(row_to_stored(row), len(row[-1] or ""), limit):
                    break
            return page

        return await self._read(work)

    async def search_count(self, project: str, query: SearchQuery) -> int:
        statement, params = compile_count(query, project=project, dialect="sqlite")

        def work(conn: sqlite3.Connection) -> int:
            return int(conn.execute(statement, params).fetchone()[0])

        return await self._read(work)

    async def include_targets(
        self, project: str, source_type: str, params: Sequence[str], source_ids: Sequence[str]
    ) -> set[tuple[str, str]]:
        return await self._pairs(include_statements(project, source_type, params, source_ids))

    async def revinclude_sources(
        self,
        project: str,
        source_type: str,
        params: Sequence[str],
        targets: Iterable[tuple[str, str]],
    ) -> set[tuple[str, str]]:
        return await self._pairs(revinclude_statements(project, source_type, params, targets))

    async def existing(self, project: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return await self._pairs(existing_statements(project, keys))

    async def referrers(
        self,
        project: str,
        targets: Sequence[str],
        *,
        limit: int,
        skip_types: Iterable[str] = (),
    ) -> list[tuple[str, str, str]]:
        statements = referrers_statements(project, targets, limit, skip_types)

        def work(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
            return [
                (str(a), str(b), str(c))
                for statement, params in statements
                for a, b, c in conn.execute(statement, params).fetchall()
            ]

        found = await self._read(work) if statements else []
        return sorted(set(found))[:limit]

    # -- projects and keys ------------------------------------------------------------------

    def exclusive(self, project: str, name: str) -> AbstractAsyncContextManager[None]:
        return self._exclusive.setdefault((project, name), asyncio.Lock())

    async def ensure_project(self, project: str, name: str) -> bool:
        created: bool = await self._write("ensure_project", project, name)
        return created

    async def add_api_key(
        self,
        project: str,
        key_hash: str,
        *,
        name: str,
        admin: bool = False,
        scope: str | None = None,
    ) -> ApiKeyRecord:
        record: ApiKeyRecord = await self._write(
            "add_api_key", project, key_hash, name, admin, scope
        )
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        def work(conn: sqlite3.Connection) -> ApiKeyRecord | None:
            row = conn.execute(sql.FIND_LIVE_KEY, (key_hash,)).fetchone()
            return None if row is None else _key_record(row)

        return await self._read(work)

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        def work(conn: sqlite3.Connection) -> ApiKeyRecord | None:
            row = conn.execute(sql.SELECT_KEY, (key_id,)).fetchone()
            return None if row is None else _key_record(row)

        return await self._read(work)

    async def list_api_keys(self, project: str | None = None) -> list[ApiKeyRecord]:
        def work(conn: sqlite3.Connection) -> list[ApiKeyRecord]:
            if project is None:
                return [_key_record(r) for r in conn.execute(sql.LIST_KEYS).fetchall()]
            rows = conn.execute(sql.LIST_PROJECT_KEYS, (project,)).fetchall()
            return [_key_record(r) for r in rows]

        return await self._read(work)

    async def revoke_api_key(self, key_id: str) -> bool:
        revoked: bool = await self._write(
            "revoke_api_key", key_id, format_instant(datetime.now(UTC))
        )
        return revoked

    async def touch_api_key(self, key_id: str, when: datetime, unless_after: datetime) -> None:
        await self._write(
            "touch_api_key", key_id, format_instant(when), format_instant(unless_after)
        )

    async def list_projects(self) -> list[ProjectRecord]:
        def work(conn: sqlite3.Connection) -> list[ProjectRecord]:
            rows = conn.execute(sql.LIST_PROJECTS).fetchall()
            return [ProjectRecord(r[0], r[1], datetime.fromisoformat(r[2])) for r in rows]

        return await self._read(work)

    # -- outbox -----------------------------------------------------------------------------

    async def outbox_pending(self, limit: int) -> list[OutboxRow]:
        def work(conn: sqlite3.Connection) -> list[OutboxRow]:
            rows = conn.execute(sql.SQLITE_OUTBOX_PENDING, (limit,)).fetchall()
            return [OutboxRow(int(s), k, p.encode()) for s, k, p in rows]

        return await self._read(work)

    async def outbox_mark_published(self, seqs: Sequence[int]) -> None:
        await self._write("outbox_mark_published", list(seqs))

    async def outbox_purge(self, older_than: datetime) -> int:
        purged: int = await self._write("outbox_purge", format_instant(older_than))
        return purged

    async def reindex(
        self, project: str, resource_type: str, after: str, limit: int
    ) -> tuple[int, str | None]:
        done: tuple[int, str | None] = await self._write(
            "reindex", project, resource_type, after, limit
        )
        return done
