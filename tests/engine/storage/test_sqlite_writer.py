"""The SQLite writer process: what happens when it dies, and what it sends back."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fhirbots.engine.errors import PreconditionFailed
from fhirbots.engine.storage.model import CreateOp, UpdateOp, WriteContext
from fhirbots.engine.storage.planner import new_id
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.storage.sqlite import SqliteStorage, WriterStopped
from tests.waiting import eventually

CTX = WriteContext(author="ApiKey/k1")


def patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def writer_pid(storage: SqliteStorage) -> int:
    writer = storage._writer  # the test looks inside on purpose
    assert writer is not None and writer._process is not None
    return writer._process.pid


def awaiting_the_writer_process(storage: SqliteStorage) -> bool:
    """Whether the writer thread has sent a group to its process and waits for the answer."""
    writer = storage._writer
    assert writer is not None and writer.ident is not None
    frame = sys._current_frames().get(writer.ident)
    names = set()
    while frame is not None:
        names.add(frame.f_code.co_name)
        frame = frame.f_back
    return {"_remote", "recv"} <= names


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    opened = SqliteStorage(tmp_path / "w.db", indexer=SqlSearchIndexer())
    await opened.open()
    yield opened
    await opened.close()


async def test_writes_run_in_another_process(storage: SqliteStorage) -> None:
    pid = writer_pid(storage)
    assert pid != os.getpid()
    [result] = await storage.apply("p1", [CreateOp(patient("A"))], CTX)
    assert result.stored is not None
    assert await storage.read("p1", "Patient", result.stored.id) is not None


async def test_a_killed_writer_fails_the_writes_it_held_and_is_replaced(
    storage: SqliteStorage,
) -> None:
    [before] = await storage.apply("p1", [CreateOp(patient("Before"))], CTX)
    assert before.stored is not None
    first = writer_pid(storage)
    # The test holds the write lock, so the writer process cannot commit the group it is sent
    # (it waits for the lock) until it is killed.
    blocker = sqlite3.connect(storage.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        held = asyncio.create_task(storage.apply("p1", [CreateOp(patient("Lost"))], CTX))
        await eventually(
            lambda: held.done() or awaiting_the_writer_process(storage),
            "the write sent to the writer process",
        )
        os.kill(first, signal.SIGKILL)
        with pytest.raises(WriterStopped) as refused:
            await held
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert refused.value.status == 503
    [after] = await storage.apply("p1", [CreateOp(patient("After"))], CTX)
    assert after.stored is not None and writer_pid(storage) != first
    # What committed before the kill is there; the killed transaction left nothing.
    page = await storage.history("p1", "Patient")
    families = {e.content["name"][0]["family"] for e in page.entries if e.content}
    assert families == {"Before", "After"}


async def test_a_writer_that_died_while_idle_is_replaced_without_failing_a_write(
    storage: SqliteStorage,
) -> None:
    first = writer_pid(storage)
    writer = storage._writer
    assert writer is not None and writer._process is not None
    process = writer._process
    os.kill(first, signal.SIGKILL)
    await eventually(lambda: process.poll() is not None, "the killed writer process to end")
    [written] = await storage.apply("p1", [CreateOp(patient("Next"))], CTX)
    assert written.stored is not None and writer_pid(storage) != first


async def test_errors_of_one_write_come_back_typed(storage: SqliteStorage) -> None:
    [created] = await storage.apply("p1", [CreateOp(patient("A"))], CTX)
    assert created.stored is not None
    stale = UpdateOp("Patient", created.stored.id, patient("B"), if_match=7)
    with pytest.raises(PreconditionFailed, match="version 7"):
        await storage.apply("p1", [stale], CTX)


async def test_writer_process_ends_with_the_storage(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "w.db")
    await storage.open()
    writer = storage._writer
    assert writer is not None and writer._process is not None
    process = writer._process
    await storage.close()
    assert process.poll() == 0


def test_server_ids_are_time_ordered_uuids() -> None:
    ids = [new_id() for _ in range(200)]
    assert len(set(ids)) == len(ids)
    parsed = [uuid.UUID(i) for i in ids]
    assert {u.version for u in parsed} == {7}
    assert all(u.variant == uuid.RFC_4122 for u in parsed)
    millis = [u.int >> 80 for u in parsed]
    assert millis == sorted(millis)
