"""The embedded log's storage: synchronous SQLite operations, each one transaction.

:class:`SqliteLogStore` is used from a single worker thread by
:class:`fhirbots.engine.eventlog.embedded.EmbeddedEventLog`. Several processes may open the same
file: WAL mode lets readers run beside the writer, ``BEGIN IMMEDIATE`` serialises writers and the
busy timeout makes a writer wait for another process instead of failing.

Tables: ``topics`` (partition count, retention), ``partitions`` (next offset and first
retained offset), ``records``, ``group_offsets`` (committed offsets), ``group_members`` and
``groups`` (membership and its generation, bumped on every join, leave or expiry).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from fhirbots.engine.eventlog.errors import BrokerError, InvalidTopic, TopicNotFound
from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.eventlog.port import Headers, OutgoingMessage, Record, Retention

__all__ = ["Member", "SqliteLogStore", "StoredTopic", "assign_partitions"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    partitions INTEGER NOT NULL,
    retention_ms INTEGER,
    retention_bytes INTEGER
);
CREATE TABLE IF NOT EXISTS partitions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL DEFAULT 0,
    start_offset INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    "offset" INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    headers BLOB,
    ts INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_position ON records (topic, partition, "offset");
CREATE INDEX IF NOT EXISTS records_time ON records (topic, partition, ts);
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    committed INTEGER NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (
    grp TEXT PRIMARY KEY,
    generation INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    grp TEXT NOT NULL,
    member TEXT NOT NULL,
    topics TEXT NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    PRIMARY KEY (grp, member)
) WITHOUT ROWID;
"""

BUSY_TIMEOUT_MS = 30_000
"""How long a writer waits for another process's write transaction before failing."""


@dataclass(frozen=True)
class StoredTopic:
    """A topic as stored: its partition count and retention."""

    name: str
    partitions: int
    retention: Retention


@dataclass(frozen=True)
class Member:
    """A live member of a consumer group and the topics it subscribed to."""

    member: str
    topics: tuple[str, ...]


def assign_partitions(
    members: Sequence[Member], partitions: dict[str, int]
) -> dict[str, frozenset[tuple[str, int]]]:
    """Spread every partition of every subscribed topic over the members (round robin).

    Deterministic: every member computes the same assignment from the same membership.
    """
    result: dict[str, set[tuple[str, int]]] = {m.member: set() for m in members}
    ordered = sorted(members, key=lambda m: m.member)
    for topic in sorted({t for m in ordered for t in m.topics}):
        readers = [m.member for m in ordered if topic in m.topics]
        for p in range(partitions.get(topic, 0)):
            result[readers[p % len(readers)]].add((topic, p))
    return {member: frozenset(parts) for member, parts in result.items()}


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _encode_headers(headers: Headers) -> bytes | None:
    if not headers:
        return None
    # latin-1 maps every byte to one code point, so header bytes survive JSON unchanged.
    return orjson.dumps([[name, value.decode("latin-1")] for name, value in headers])


def _decode_headers(raw: bytes | None) -> Headers:
    if not raw:
        return ()
    return tuple((name, value.encode("latin-1")) for name, value in orjson.loads(raw))


def _ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class SqliteLogStore:
    """Synchronous operations on the log file; not thread-safe, use from one thread.

    Args:
        path: The SQLite file (created with its parent folder if missing).
        synchronous: SQLite ``synchronous`` pragma. ``FULL`` (default) makes a publish
            durable against power loss; ``NORMAL`` only against process crashes, and faster.
    """

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode=WAL")
            if synchronous not in {"FULL", "NORMAL", "EXTRA"}:
                raise InvalidTopic(f"unknown synchronous mode {synchronous!r}")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise BrokerError(f"cannot open event log {path}: {exc}") from exc
        self._topics: dict[str, StoredTopic] = {}

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise BrokerError(f"event log write failed: {exc}") from exc
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BrokerError(f"event log commit failed: {exc}") from exc

    # -- topics -------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, retention: Retention) -> None:
        """Create a topic if it does not exist (an existing topic keeps its settings)."""
        if not name or partitions < 1:
            raise InvalidTopic(f"bad topic {name!r} with {partitions} partitions")
        age_ms = None if retention.age is None else int(retention.age.total_seconds() * 1000)
        with self._write() as db:
            inserted = db.execute(
                "INSERT OR IGNORE INTO topics VALUES (?, ?, ?, ?)",
                (name, partitions, age_ms, retention.bytes_per_partition),
            ).rowcount
            if inserted:
                db.executemany(
                    "INSERT INTO partitions (topic, partition) VALUES (?, ?)",
                    [(name, p) for p in range(partitions)],
                )

    def topic(self, name: str) -> StoredTopic:
        """The stored topic ``name``.

        Raises:
            TopicNotFound: It does not exist.
        """
        found = self._topics.get(name)
        if found is not None:
            return found
        row = self._db.execute(
            "SELECT partitions, retention_ms, retention_bytes FROM topics WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise TopicNotFound(f"topic {name!r} does not exist")
        age = None if row[1] is None else timedelta(milliseconds=row[1])
        found = StoredTopic(name, row[0], Retention(age=age, bytes_per_partition=row[2]))
        self._topics[name] = found
        return found

    def topics(self) -> list[str]:
        """Names of all topics."""
        return [r[0] for r in self._db.execute("SELECT name FROM topics ORDER BY name")]

    # -- writing ------------------------------------------------------------------------

    def append(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[Record]:
        """Append messages in one transaction; returns them with their positions."""
        count = self.topic(topic).partitions
        now = _now_ms()
        stamp = _ms_to_datetime(now)
        placed = [(partition_for(m.key, count), m) for m in messages]
        with self._write() as db:
            next_offsets = {
                p: o
                for p, o in db.execute(
                    "SELECT partition, next_offset FROM partitions WHERE topic = ?", (topic,)
                )
            }
            rows = []
            records = []
            for partition, m in placed:
                offset = next_offsets[partition]
                next_offsets[partition] = offset + 1
                headers = _encode_headers(m.headers)
                size = len(m.value) + len(m.key) + (len(headers) if headers else 0)
                rows.append((topic, partition, offset, m.key, m.value, headers, now, size))
                records.append(Record(topic, partition, offset, m.key, m.value, m.headers, stamp))
            db.executemany(
                'INSERT INTO records (topic, partition, "offset", key, value, headers, ts, size)'
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany(
                "UPDATE partitions SET next_offset = ? WHERE topic = ? AND partition = ?",
                [(o, topic, p) for p, o in next_offsets.items()],
            )
        return records

    # -- reading ------------------------------------------------------------------------

    def bounds(self, topic: str) -> dict[int, tuple[int, int]]:
        """(first retained offset, next offset) per partition of ``topic``."""
        self.topic(topic)
        return {
            p: (start, end)
            for p, start, end in self._db.execute(
                "SELECT partition, start_offset, next_offset FROM partitions WHERE topic = ?",
                (topic,),
            )
        }

    def fetch(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        """Up to ``limit`` records of one partition from ``offset`` on."""
        rows = self._db.execute(
            'SELECT "offset", key, value, headers, ts FROM records'
            ' WHERE topic = ? AND partition = ? AND "offset" >= ? ORDER BY "offset" LIMIT ?',
            (topic, partition, offset, limit),
        ).fetchall()
        return [
            Record(topic, partition, o, k, bytes(v), _decode_headers(h), _ms_to_datetime(ts))
            for o, k, v, h, ts in rows
        ]

    def offset_for_time(self, topic: str, partition: int, since: datetime) -> int:
        """First offset stored at or after ``since`` (the next offset if none)."""
        ms = int(since.timestamp() * 1000)
        row = self._db.execute(
            'SELECT MIN("offset") FROM records WHERE topic = ? AND partition = ? AND ts >= ?',
            (topic, partition, ms),
        ).fetchone()
        if row[0] is not None:
            return int(row[0])
        return self.bounds(topic)[partition][1]

    # -- groups -------------------------------------------------------------------------

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        """Committed offsets of ``group``."""
        return {
            (t, p): c
            for t, p, c in self._db.execute(
                "SELECT topic, partition, committed FROM group_offsets WHERE grp = ?", (group,)
            )
        }

    def commit(
        self, group: str, generation: int | None, offsets: dict[tuple[str, int], int]
    ) -> bool:
        """Store committed offsets; refused (False) if the group's generation moved on.

        A member whose view of the group is stale must not commit for partitions that may
        already belong to another member (the same rule as Kafka's CommitFailedError).
        ``generation`` None skips the check (an administrative reset).
        """
        with self._write() as db:
            if generation is not None and self._generation(db, group) != generation:
                return False
            db.executemany(
                "INSERT INTO group_offsets VALUES (?, ?, ?, ?) ON CONFLICT (grp, topic, partition)"
                " DO UPDATE SET committed = excluded.committed",
                [(group, t, p, o) for (t, p), o in offsets.items()],
            )
        return True

    @staticmethod
    def _generation(db: sqlite3.Connection, group: str) -> int:
        row = db.execute("SELECT generation FROM groups WHERE grp = ?", (group,)).fetchone()
        return int(row[0]) if row else 0

    def generation(self, group: str) -> int:
        """Current generation of ``group`` (0 if it never had members)."""
        return self._generation(self._db, group)

    def _bump(self, db: sqlite3.Connection, group: str) -> int:
        db.execute(
            "INSERT INTO groups VALUES (?, 1) ON CONFLICT (grp)"
            " DO UPDATE SET generation = generation + 1",
            (group,),
        )
        return self._generation(db, group)

    def _expire(self, db: sqlite3.Connection, group: str, session_timeout_ms: int) -> int:
        return db.execute(
            "DELETE FROM group_members WHERE grp = ? AND heartbeat_ms < ?",
            (group, _now_ms() - session_timeout_ms),
        ).rowcount

    def join(self, group: str, member: str, topics: Sequence[str], session_timeout_ms: int) -> int:
        """Add ``member`` to ``group`` (expiring silent members); returns the new generation."""
        with self._write() as db:
            self._expire(db, group, session_timeout_ms)
            db.execute(
                "INSERT OR REPLACE INTO group_members VALUES (?, ?, ?, ?)",
                (group, member, orjson.dumps(sorted(topics)).decode(), _now_ms()),
            )
            return self._bump(db, group)

    def heartbeat(self, group: str, member: str, session_timeout_ms: int) -> int | None:
        """Refresh ``member`` and expire silent ones; None if ``member`` itself was expired."""
        with self._write() as db:
            alive = db.execute(
                "UPDATE group_members SET heartbeat_ms = ? WHERE grp = ? AND member = ?",
                (_now_ms(), group, member),
            ).rowcount
            if not alive:
                return None
            if self._expire(db, group, session_timeout_ms):
                return self._bump(db, group)
            return self._generation(db, group)

    def leave(self, group: str, member: str) -> None:
        """Remove ``member`` from ``group``."""
        with self._write() as db:
            if db.execute(
                "DELETE FROM group_members WHERE grp = ? AND member = ?", (group, member)
            ).rowcount:
                self._bump(db, group)

    def members(self, group: str) -> list[Member]:
        """Current members of ``group``."""
        return [
            Member(m, tuple(orjson.loads(t)))
            for m, t in self._db.execute(
                "SELECT member, topics FROM group_members WHERE grp = ? ORDER BY member", (group,)
            )
        ]

    def assignment(self, group: str, member: str) -> tuple[int, frozenset[tuple[str, int]]]:
        """(generation, partitions of ``member``), read in one snapshot."""
        self._db.execute("BEGIN")
        try:
            generation = self._generation(self._db, group)
            members = self.members(group)
        finally:
            self._db.execute("COMMIT")
        counts = {}
        for topic in {t for m in members for t in m.topics}:
            try:
                counts[topic] = self.topic(topic).partitions
            except TopicNotFound:
                counts[topic] = 0
        return generation, assign_partitions(members, counts).get(member, frozenset())

    # -- retention ----------------------------------------------------------------------

    def enforce_retention(self, now: datetime | None = None) -> int:
        """Delete records beyond each topic's age and size limits; returns how many."""
        now_ms = int((now or datetime.now(UTC)).timestamp() * 1000)
        deleted = 0
        for name in self.topics():
            topic = self.topic(name)
            if topic.retention.age is None and topic.retention.bytes_per_partition is None:
                continue
            for partition in range(topic.partitions):
                deleted += self._trim(topic, partition, now_ms)
        return deleted

    def _trim(self, topic: StoredTopic, partition: int, now_ms: int) -> int:
        with self._write() as db:
            start, end = db.execute(
                "SELECT start_offset, next_offset FROM partitions"
                " WHERE topic = ? AND partition = ?",
                (topic.name, partition),
            ).fetchone()
            new_start = start
            if topic.retention.age is not None:
                cutoff = now_ms - int(topic.retention.age.total_seconds() * 1000)
                row = db.execute(
                    'SELECT MIN("offset") FROM records WHERE topic = ? AND partition = ?'
                    " AND ts >= ?",
                    (topic.name, partition, cutoff),
                ).fetchone()
                new_start = max(new_start, end if row[0] is None else row[0])
            if topic.retention.bytes_per_partition is not None:
                row = db.execute(
                    'SELECT MAX("offset") FROM (SELECT "offset", SUM(size) OVER'
                    ' (ORDER BY "offset" DESC) AS total FROM records'
                    " WHERE topic = ? AND partition = ?) WHERE total > ?",
                    (topic.name, partition, topic.retention.bytes_per_partition),
                ).fetchone()
                if row[0] is not None:
                    new_start = max(new_start, row[0] + 1)
            if new_start == start:
                return 0
            deleted = db.execute(
                'DELETE FROM records WHERE topic = ? AND partition = ? AND "offset" < ?',
                (topic.name, partition, new_start),
            ).rowcount
            db.execute(
                "UPDATE partitions SET start_offset = ? WHERE topic = ? AND partition = ?",
                (new_start, topic.name, partition),
            )
            return int(deleted)
