"""One group commit (``commit_group``): writes share a commit, a failing one rolls back alone."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirbots.engine.errors import PreconditionFailed
from fhirbots.engine.storage import sql
from fhirbots.engine.storage.model import CreateOp, UpdateOp, WriteContext, WriteOp
from fhirbots.engine.storage.planner import op_target
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.storage.sqlite_writes import Request, commit_group, connect, connect_writer
from tests.waiting import eventually

CTX = WriteContext(author="ApiKey/k1")
INDEXER = SqlSearchIndexer()


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "g.db")
    for statement in sql.schema("sqlite") + INDEXER.ddl("sqlite"):
        connection.execute(statement)
    yield connection
    connection.close()


def apply(*ops: WriteOp) -> Request:
    return ("apply", ("p1", list(ops), [op_target(op) for op in ops], CTX))


def patient(family: str, resource_id: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"resourceType": "Patient", "name": [{"family": family}]}
    if resource_id is not None:
        body["id"] = resource_id
    return body


def families(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT value_exact FROM search_string WHERE param = 'family'")
    return {row[0] for row in rows}


def test_a_group_commits_every_write_once(conn: sqlite3.Connection) -> None:
    outcomes = commit_group(conn, INDEXER, [apply(CreateOp(patient(f"F{i}"))) for i in range(5)])
    assert [error for _, error in outcomes] == [None] * 5
    assert families(conn) == {f"F{i}" for i in range(5)}
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 5
    assert not conn.in_transaction


def test_a_failing_write_rolls_back_alone(conn: sqlite3.Connection) -> None:
    [(first, _)] = commit_group(conn, INDEXER, [apply(CreateOp(patient("Old", "a")))])
    assert first[0].stored is not None
    # The middle write creates a resource, then fails on a stale If-Match: its create must go
    # too, while the writes before and after it commit.
    group = [
        apply(CreateOp(patient("Before"))),
        apply(
            CreateOp(patient("Doomed")),
            UpdateOp("Patient", "a", patient("Stale", "a"), if_match=9),
        ),
        apply(CreateOp(patient("After"))),
    ]
    outcomes = commit_group(conn, INDEXER, group)
    errors = [error for _, error in outcomes]
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], PreconditionFailed)
    assert families(conn) == {"Old", "Before", "After"}
    assert conn.execute("SELECT COUNT(*) FROM resources").fetchone()[0] == 3
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 3
    assert not conn.in_transaction


async def test_the_checkpointer_copies_commits_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    writer, checkpointer = connect_writer(path)
    try:
        writer.execute("CREATE TABLE blobs (body TEXT)")
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany("INSERT INTO blobs VALUES (?)", [("x" * 4000,) for _ in range(500)])
        writer.execute("COMMIT")
        # 2 MB sit in the WAL: the writer itself checkpoints only past 20,000 pages.
        assert path.stat().st_size < 1_000_000
        checkpointer.committed()
        await eventually(
            lambda: path.stat().st_size >= 2_000_000, "the checkpoint to grow the database file"
        )
    finally:
        checkpointer.close()
        writer.close()
