"""The SQLite writer process: what happens when it dies, and what it sends back."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest

from fhirbots.engine.errors import PreconditionFailed
from fhirbots.engine.storage.model import CreateOp, UpdateOp, WriteContext
from fhirbots.engine.storage.planner import new_id
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.storage.sqlite import SqliteStorage, WriterStopped

CTX = WriteContext(author="ApiKey/k1")


def patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def writer_pid(storage: SqliteStorage) -> int:
    writer = storage._writer  # the test looks inside on purpose
    assert writer is not None and writer._process is not None
    return writer._process.pid


@pytest.fixture
async def storage(tmp_path: Path) -> SqliteStorage:
    opened = SqliteStorage(tmp_path / "w.db", indexer=SqlSearchIndexer())
    await opened.open()
    yield opened  # type: ignore[misc]
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
    big = [CreateOp(patient(f"Lost{i}")) for i in range(3000)]
    held = asyncio.create_task(storage.apply("p1", big, CTX))
    await asyncio.sleep(0.1)  # the group is in the writer, committing
    os.kill(first, signal.SIGKILL)
    with pytest.raises(WriterStopped) as refused:
        await held
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
    os.kill(first, signal.SIGKILL)
    await asyncio.sleep(0.2)
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
