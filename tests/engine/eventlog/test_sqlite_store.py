from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhirbots.engine.eventlog import sqlite_store
from fhirbots.engine.eventlog.errors import InvalidTopic, TopicNotFound
from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.eventlog.port import OutgoingMessage, Retention
from fhirbots.engine.eventlog.sqlite_store import Member, SqliteLogStore, assign_partitions


@pytest.fixture
def store(tmp_path: Path) -> SqliteLogStore:
    s = SqliteLogStore(tmp_path / "log.sqlite", synchronous="NORMAL")
    s.create_topic("t", 3, Retention(age=None))
    return s


def test_append_assigns_consecutive_offsets_per_partition(store: SqliteLogStore) -> None:
    msgs = [OutgoingMessage(f"k{i % 5}", str(i).encode()) for i in range(30)]
    records = store.append("t", msgs)
    by_partition: dict[int, list[int]] = {}
    for r in records:
        assert r.partition == partition_for(r.key, 3)
        by_partition.setdefault(r.partition, []).append(r.offset)
    for offsets in by_partition.values():
        assert offsets == list(range(len(offsets)))
    more = store.append("t", [OutgoingMessage("k0", b"x")])
    assert more[0].offset == len(by_partition[partition_for("k0", 3)])


def test_fetch_round_trips_key_value_headers(store: SqliteLogStore) -> None:
    headers = (("traceparent", b"00-abc-01"), ("bin", bytes(range(256))), ("bin", b""))
    (record,) = store.append("t", [OutgoingMessage("k", b"\x00\xffpayload", headers)])
    (fetched,) = store.fetch("t", record.partition, record.offset, 10)
    assert fetched.key == "k"
    assert fetched.value == b"\x00\xffpayload"
    assert fetched.headers == headers
    assert fetched.header("bin") == b""
    assert abs((fetched.timestamp - datetime.now(UTC)).total_seconds()) < 5


def test_unknown_topic_and_bad_partitions(store: SqliteLogStore) -> None:
    with pytest.raises(TopicNotFound):
        store.append("nope", [OutgoingMessage("k", b"v")])
    with pytest.raises(InvalidTopic):
        store.create_topic("bad", 0, Retention())


def test_create_topic_is_idempotent_and_keeps_settings(store: SqliteLogStore) -> None:
    store.create_topic("t", 9, Retention(age=timedelta(seconds=1)))
    assert store.topic("t").partitions == 3
    assert store.topic("t").retention.age is None


def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    first = SqliteLogStore(path)
    first.create_topic("t", 2, Retention())
    first.append("t", [OutgoingMessage("a", b"1"), OutgoingMessage("a", b"2")])
    first.commit("g", None, {("t", partition_for("a", 2)): 1})
    first.close()
    second = SqliteLogStore(path)
    p = partition_for("a", 2)
    assert [r.value for r in second.fetch("t", p, 0, 10)] == [b"1", b"2"]
    assert second.committed("g") == {("t", p): 1}
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_commit_is_refused_for_a_stale_generation(store: SqliteLogStore) -> None:
    gen = store.join("g", "m1", ["t"], 10_000)
    assert store.commit("g", gen, {("t", 0): 5})
    store.join("g", "m2", ["t"], 10_000)
    assert not store.commit("g", gen, {("t", 0): 9})
    assert store.committed("g") == {("t", 0): 5}


def test_membership_expires_silent_members(
    store: SqliteLogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.join("g", "dead", ["t"], 10_000)
    store.join("g", "alive", ["t"], 10_000)
    gen, parts = store.assignment("g", "alive")
    assert len(parts) in (1, 2)
    # Ten seconds later (the store's clock is moved on rather than waited for), a 5 s session
    # timeout expires everybody but the member that heartbeats.
    later = sqlite_store._now_ms() + 10_000
    monkeypatch.setattr(sqlite_store, "_now_ms", lambda: later)
    new_gen = store.heartbeat("g", "alive", 5_000)
    assert new_gen is not None
    assert new_gen > gen
    assert [m.member for m in store.members("g")] == ["alive"]
    assert store.assignment("g", "alive")[1] == {("t", 0), ("t", 1), ("t", 2)}
    assert store.heartbeat("g", "dead", 10_000) is None


def test_leave_bumps_generation(store: SqliteLogStore) -> None:
    gen = store.join("g", "m", ["t"], 10_000)
    store.leave("g", "m")
    assert store.generation("g") == gen + 1
    assert store.members("g") == []


def test_assign_partitions_spreads_evenly_and_per_subscription() -> None:
    members = [Member("b", ("x",)), Member("a", ("x", "y")), Member("c", ("x",))]
    result = assign_partitions(members, {"x": 6, "y": 2})
    assert result["a"] >= {("y", 0), ("y", 1)}
    xs = {m: {p for t, p in parts if t == "x"} for m, parts in result.items()}
    assert [len(v) for v in xs.values()] == [2, 2, 2]
    assert set().union(*xs.values()) == set(range(6))


def test_retention_by_age(store: SqliteLogStore, tmp_path: Path) -> None:
    store.create_topic("aged", 1, Retention(age=timedelta(minutes=5)))
    store.append("aged", [OutgoingMessage("k", b"old") for _ in range(3)])
    assert store.enforce_retention() == 0
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert store.enforce_retention(now=later) == 3
    assert store.fetch("aged", 0, 0, 10) == []
    assert store.bounds("aged") == {0: (3, 3)}
    (new,) = store.append("aged", [OutgoingMessage("k", b"new")])
    assert new.offset == 3


def test_retention_by_size_keeps_newest(store: SqliteLogStore) -> None:
    store.create_topic("sized", 1, Retention(age=None, bytes_per_partition=100))
    store.append("sized", [OutgoingMessage("k", b"x" * 29) for _ in range(10)])  # 30 B each
    assert store.enforce_retention() == 7
    assert [r.offset for r in store.fetch("sized", 0, 0, 100)] == [7, 8, 9]
    assert store.bounds("sized")[0] == (7, 10)


def test_offset_for_time(store: SqliteLogStore) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    (r,) = store.append("t", [OutgoingMessage("k", b"v")])
    assert store.offset_for_time("t", r.partition, before) == r.offset
    after = datetime.now(UTC) + timedelta(seconds=5)
    assert store.offset_for_time("t", r.partition, after) == r.offset + 1
