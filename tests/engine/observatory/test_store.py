"""The observatory store contract on SQLite and PostgreSQL, and the factory choosing one."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import asyncpg
import pytest

from fhirbots.engine.observatory.errors import ObservatoryStoreError
from fhirbots.engine.observatory.factory import create_observatory_store
from fhirbots.engine.observatory.model import (
    DURATION_BUCKETS_MS,
    WINDOW,
    ActivityRow,
    LagSample,
    SeriesPoint,
    WindowRow,
)
from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.engine.observatory.store_postgres import PostgresObservatoryStore
from fhirbots.engine.observatory.store_sql import BUCKET_COLUMNS
from fhirbots.engine.observatory.store_sqlite import OBSERVATORY_DB, SqliteObservatoryStore
from fhirbots.schemas.errors import FhirbotsError
from fhirbots.schemas.executions import BotExecutionRecord
from tests.conftest import postgres_dsn, reset_postgres

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
NO_BUCKETS = (0,) * (len(DURATION_BUCKETS_MS) + 1)


def histogram(**counts: int) -> tuple[int, ...]:
    """A histogram with ``counts`` (``b3=2``: two durations in bucket 3)."""
    buckets = list(NO_BUCKETS)
    for name, count in counts.items():
        buckets[int(name[1:])] = count
    return tuple(buckets)


def window(
    dims: tuple[str, ...] = ("Bot/b1", "success"),
    at: datetime = T0,
    count: int = 1,
    *,
    project: str = "p1",
    total_ms: float = 0.0,
    buckets: tuple[int, ...] = (),
) -> WindowRow:
    return WindowRow(project, "executions", dims, at, count, total_ms, buckets)


def execution(
    n: int,
    *,
    bot: str = "Bot/b1",
    status: Literal["success", "error"] = "success",
    project: str = "p1",
) -> BotExecutionRecord:
    return BotExecutionRecord(
        execution_id=f"{project}-x{n}",
        project=project,
        bot=bot,
        trigger="subscription",
        status=status,
        started=T0 + timedelta(seconds=n),
        duration_ms=1.5 * n,
        output={"n": n},
        trace_id="t1",
    )


def step(ref: str, at: datetime, *, trace_id: str = "t1", parent: str | None = None) -> ActivityRow:
    return ActivityRow(
        project="p1",
        trace_id=trace_id,
        kind="delivery" if ref.startswith("d") else "change",
        ref=ref,
        parent=parent,
        at=at,
        duration_ms=2.5,
        summary={"ref": ref, "outcome": ["ok"]},
        topic="fhir.changes.v1",
        partition=3,
        offset=42,
    )


class Backend:
    """Opens stores of one kind on one file or database, and reaches it behind their back."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / OBSERVATORY_DB
        self.dsn = postgres_dsn() if kind == "postgres" else ""
        self.opened: list[ObservatoryStore] = []

    async def open(self) -> ObservatoryStore:
        """A new store on the backend's file or database, open."""
        store: ObservatoryStore = (
            PostgresObservatoryStore(self.dsn)
            if self.kind == "postgres"
            else SqliteObservatoryStore(self.path)
        )
        await store.open()
        self.opened.append(store)
        return store

    async def query(self, statement: str) -> list[tuple[Any, ...]]:
        """Run ``statement`` on a connection of its own (no placeholders)."""
        if self.kind == "postgres":
            conn = await asyncpg.connect(self.dsn)
            try:
                return [tuple(r) for r in await conn.fetch(statement)]
            finally:
                await conn.close()
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            return db.execute(statement).fetchall()

    async def close(self) -> None:
        for store in self.opened:
            await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each adapter in turn, on an empty file or database."""
    made = Backend(request.param, tmp_path)
    if made.kind == "postgres":
        await reset_postgres(made.dsn)
    yield made
    await made.close()


@pytest.fixture
async def store(backend: Backend) -> ObservatoryStore:
    return await backend.open()


# -- windows ---------------------------------------------------------------------------------


async def stored_windows(backend: Backend) -> list[tuple[int, float, tuple[int, ...]]]:
    """Count, total and histogram of every window row, read behind the store's back (the
    port shows neither totals nor whole histograms)."""
    columns = ", ".join(BUCKET_COLUMNS)
    rows = await backend.query(f"SELECT count, total_ms, {columns} FROM observatory_window")
    return [(r[0], r[1], tuple(r[2:])) for r in rows]


async def test_a_window_added_twice_is_summed(backend: Backend, store: ObservatoryStore) -> None:
    await store.add_windows([window(count=3, total_ms=1.5, buckets=histogram(b0=3))])
    await store.add_windows([window(count=1, total_ms=20.0, buckets=histogram(b20=1))])

    assert await stored_windows(backend) == [(4, 21.5, histogram(b0=3, b20=1))]
    [point] = await store.series("p1", "executions", T0, T0 + WINDOW, WINDOW)
    # Either histogram alone would put both quantiles in one bucket.
    assert (point.count, point.p50_ms, point.p99_ms) == (
        4,
        DURATION_BUCKETS_MS[0],
        DURATION_BUCKETS_MS[20],
    )


async def test_rows_of_one_window_in_one_batch_are_summed(store: ObservatoryStore) -> None:
    await store.add_windows(
        [window(count=2, buckets=histogram(b1=2)), window(count=5, buckets=histogram(b1=5))]
    )
    [point] = await store.series("p1", "executions", T0, T0 + WINDOW, WINDOW)
    assert point.count == 7 and point.p50_ms == DURATION_BUCKETS_MS[1]


async def test_a_histogram_added_to_a_window_without_one_is_kept(
    backend: Backend, store: ObservatoryStore
) -> None:
    await store.add_windows([window(count=2)])
    await store.add_windows([window(count=1, total_ms=0.6, buckets=histogram(b3=1))])
    await store.add_windows([window(count=4)])

    assert await stored_windows(backend) == [(7, 0.6, histogram(b3=1))]


async def test_a_histogram_of_another_size_is_refused_before_anything_is_written(
    backend: Backend, store: ObservatoryStore
) -> None:
    with pytest.raises(ValueError, match="buckets"):
        await store.add_windows([window(at=T0 + WINDOW), window(buckets=(1, 2, 3))])
    assert await stored_windows(backend) == []


async def test_windows_without_durations_have_no_quantiles(store: ObservatoryStore) -> None:
    await store.add_windows([window(count=2), window(count=3)])
    [point] = await store.series("p1", "executions", T0, T0 + WINDOW, WINDOW)
    assert (point.count, point.p50_ms, point.p99_ms) == (5, None, None)


async def test_two_writers_adding_one_window_concurrently_both_count(
    backend: Backend, store: ObservatoryStore
) -> None:
    other = await backend.open()
    times = 40
    row = window(count=1, total_ms=0.5, buckets=histogram(b2=1))

    async def add_many(writer: ObservatoryStore) -> None:
        for _ in range(times):
            await writer.add_windows([row])

    await asyncio.gather(add_many(store), add_many(other), add_many(store))

    assert await stored_windows(backend) == [(3 * times, 1.5 * times, histogram(b2=3 * times))]


async def test_series_adds_windows_into_steps_within_the_range(store: ObservatoryStore) -> None:
    await store.add_windows(
        [
            window(at=T0 - WINDOW, count=100),  # before since
            window(at=T0, count=1),
            window(at=T0 + WINDOW, count=2),
            window(at=T0 + 2 * WINDOW, count=4),
            window(at=T0 + 6 * WINDOW, count=8),
            window(at=T0 + 9 * WINDOW, count=100),  # at until: excluded
        ]
    )
    points = await store.series("p1", "executions", T0, T0 + 9 * WINDOW, 3 * WINDOW)
    assert [(p.start, p.dims, p.count) for p in points] == [
        (T0, ("Bot/b1", "success"), 7),
        (T0 + 6 * WINDOW, ("Bot/b1", "success"), 8),
    ]
    [total] = await store.series("p1", "executions", T0, T0 + 9 * WINDOW, 9 * WINDOW)
    assert total.count == 15


async def test_series_keeps_series_apart_and_filters_on_leading_dims(
    store: ObservatoryStore,
) -> None:
    await store.add_windows(
        [
            WindowRow("p1", "changes", ("Patient", "create"), T0, 1),
            WindowRow("p1", "changes", ("Patient", "update"), T0, 2),
            WindowRow("p1", "changes", ("Observation", "create"), T0, 4),
            WindowRow("p1", "deliveries", ("s1", "ok"), T0, 8),
        ]
    )

    async def read(*dims: str | None) -> list[tuple[tuple[str, ...], int]]:
        points = await store.series("p1", "changes", T0, T0 + WINDOW, WINDOW, dims)
        return [(p.dims, p.count) for p in points]

    everything = [
        (("Observation", "create"), 4),
        (("Patient", "create"), 1),
        (("Patient", "update"), 2),
    ]
    assert await read() == everything
    assert await read(None) == everything
    assert await read("Patient") == [(("Patient", "create"), 1), (("Patient", "update"), 2)]
    assert await read(None, "create") == [
        (("Observation", "create"), 4),
        (("Patient", "create"), 1),
    ]
    assert await read("Patient", "update") == [(("Patient", "update"), 2)]
    assert await read("Patient", "update", "more") == []
    assert await read("Encounter") == []


async def test_series_of_every_project_adds_them(store: ObservatoryStore) -> None:
    await store.add_windows(
        [
            window(project="p1", count=1, buckets=histogram(b4=1)),
            window(project="p2", count=2, buckets=histogram(b8=2)),
            window(project="p2", dims=("Bot/b2", "error"), count=5),
        ]
    )
    everyone = await store.series(None, "executions", T0, T0 + WINDOW, WINDOW)
    assert [(p.dims, p.count) for p in everyone] == [
        (("Bot/b1", "success"), 3),
        (("Bot/b2", "error"), 5),
    ]
    assert everyone[0].p50_ms == DURATION_BUCKETS_MS[8]
    assert everyone[0].p99_ms == DURATION_BUCKETS_MS[8]
    [p1] = await store.series("p1", "executions", T0, T0 + WINDOW, WINDOW)
    assert (p1.count, p1.p50_ms) == (1, DURATION_BUCKETS_MS[4])


# -- lag -------------------------------------------------------------------------------------


async def test_lag_samples_since_a_time_by_group(store: ObservatoryStore) -> None:
    samples = [
        LagSample("matcher", T0, 5, 0.5),
        LagSample("dispatcher", T0 + WINDOW, 0, 0.0),
        LagSample("matcher", T0 + 2 * WINDOW, 7, 1.25),
        LagSample("matcher", T0 - WINDOW, 9, 3.0),
    ]
    await store.add_lag(samples)
    await store.add_lag([])

    assert await store.lag(T0) == samples[:3]
    assert await store.lag(T0, "matcher") == [samples[0], samples[2]]
    assert await store.lag(T0 + WINDOW, "dispatcher") == [samples[1]]
    assert await store.lag(T0, "relay") == []


# -- executions ------------------------------------------------------------------------------


async def test_executions_newest_first_filtered_and_paged(store: ObservatoryStore) -> None:
    records = [
        execution(1),
        execution(2, status="error"),
        execution(3, bot="Bot/b2"),
        execution(4),
        execution(5, bot="Bot/b2", status="error"),
        execution(6, project="p2"),
    ]
    await store.add_executions(records)

    def ids(found: list[BotExecutionRecord]) -> list[str]:
        return [r.execution_id for r in found]

    assert ids(await store.executions("p1")) == ["p1-x5", "p1-x4", "p1-x3", "p1-x2", "p1-x1"]
    assert ids(await store.executions("p1", bot="Bot/b2")) == ["p1-x5", "p1-x3"]
    assert ids(await store.executions("p1", status="error")) == ["p1-x5", "p1-x2"]
    assert ids(await store.executions("p1", bot="Bot/b1", status="error")) == ["p1-x2"]

    first = await store.executions("p1", limit=2)
    assert ids(first) == ["p1-x5", "p1-x4"]
    second = await store.executions("p1", before=first[-1].started, limit=2)
    assert ids(second) == ["p1-x3", "p1-x2"]
    third = await store.executions("p1", before=second[-1].started, limit=2)
    assert ids(third) == ["p1-x1"]
    assert await store.executions("p1", before=third[-1].started) == []


async def test_execution_by_id(store: ObservatoryStore) -> None:
    record = execution(7, status="error").model_copy(update={"logs": "boom", "error": "E"})
    await store.add_executions([record])

    assert await store.execution("p1", "p1-x7") == record
    assert await store.execution("p1", "p1-x8") is None
    assert await store.execution("p2", "p1-x7") is None


async def test_an_execution_stored_twice_is_kept_once(store: ObservatoryStore) -> None:
    first = execution(1)
    await store.add_executions([first])
    await store.add_executions([first.model_copy(update={"logs": "again"}), execution(2)])

    found = await store.executions("p1")
    assert [r.execution_id for r in found] == ["p1-x2", "p1-x1"]
    assert found[1] == first


# -- traces ----------------------------------------------------------------------------------


async def test_trace_steps_oldest_first_and_trace_of_a_ref(store: ObservatoryStore) -> None:
    steps = [
        step("c1", T0),
        step("d1", T0 + timedelta(milliseconds=30), parent="c1"),
        step("d2", T0 + timedelta(milliseconds=20), parent="c1"),
        step("c9", T0, trace_id="t2"),
    ]
    await store.add_activity(list(reversed(steps)))

    assert await store.trace("p1", "t1") == [steps[0], steps[2], steps[1]]
    assert await store.trace("p1", "t2") == [steps[3]]
    assert await store.trace("p2", "t1") == []
    assert await store.trace_of("p1", "d2") == "t1"
    assert await store.trace_of("p1", "c9") == "t2"
    assert await store.trace_of("p1", "nothing") is None
    assert await store.trace_of("p2", "d2") is None


async def test_a_step_stored_twice_is_kept_once(store: ObservatoryStore) -> None:
    first = step("c1", T0)
    await store.add_activity([first])
    await store.add_activity([step("c1", T0 + WINDOW), step("d1", T0 + WINDOW, parent="c1")])

    assert [(s.ref, s.at) for s in await store.trace("p1", "t1")] == [
        ("c1", T0),
        ("d1", T0 + WINDOW),
    ]


# -- retention and durability ----------------------------------------------------------------

OLD = T0 - timedelta(days=2)


async def _fill_old_and_new(store: ObservatoryStore) -> None:
    await store.add_windows([window(at=OLD), window(at=OLD + WINDOW), window(at=T0, count=3)])
    await store.add_lag([LagSample("matcher", OLD, 1, 1.0), LagSample("matcher", T0, 2, 2.0)])
    old_execution = execution(1).model_copy(update={"started": OLD})
    await store.add_executions([old_execution, execution(2)])
    await store.add_activity([step("c0", OLD, trace_id="t0"), step("c1", T0)])


async def test_purge_removes_old_rows_of_every_kind_and_keeps_new(
    store: ObservatoryStore,
) -> None:
    await _fill_old_and_new(store)

    assert await store.purge(T0 - timedelta(days=1)) == 5

    whole_range = T0 + WINDOW - OLD
    assert await store.series("p1", "executions", OLD, T0 + WINDOW, whole_range) == [
        SeriesPoint(OLD, ("Bot/b1", "success"), 3)
    ]
    assert [s.events for s in await store.lag(OLD)] == [2]
    assert [r.execution_id for r in await store.executions("p1")] == ["p1-x2"]
    assert await store.trace("p1", "t0") == []
    assert [s.ref for s in await store.trace("p1", "t1")] == ["c1"]
    assert await store.purge(T0 - timedelta(days=1)) == 0


async def test_a_reopened_store_keeps_its_data(backend: Backend, store: ObservatoryStore) -> None:
    await _fill_old_and_new(store)
    await store.close()

    reopened = await backend.open()
    points = await reopened.series("p1", "executions", OLD, T0 + WINDOW, WINDOW)
    assert [(p.start, p.count) for p in points] == [(OLD, 1), (OLD + WINDOW, 1), (T0, 3)]
    assert len(await reopened.lag(OLD)) == 2
    assert await reopened.execution("p1", "p1-x2") == execution(2)
    assert await reopened.trace_of("p1", "c1") == "t1"
    # Opening again on existing tables is idempotent, and adding still adds.
    await reopened.add_windows([window(at=T0, count=1)])
    [point] = await reopened.series("p1", "executions", T0, T0 + WINDOW, WINDOW)
    assert point.count == 4


# -- errors ----------------------------------------------------------------------------------


async def test_a_driver_error_surfaces_as_the_store_error(
    backend: Backend, store: ObservatoryStore
) -> None:
    await backend.query("DROP TABLE observatory_window")

    with pytest.raises(ObservatoryStoreError) as written:
        await store.add_windows([window()])
    with pytest.raises(ObservatoryStoreError) as read:
        await store.series("p1", "executions", T0, T0 + WINDOW, WINDOW)

    for raised in (written.value, read.value):
        assert isinstance(raised.__cause__, sqlite3.Error | asyncpg.PostgresError)
        assert "observatory_window" in str(raised)
    # The other tables are untouched: the store goes on.
    await store.add_lag([LagSample("matcher", T0, 1, 0.0)])
    assert len(await store.lag(T0)) == 1


async def test_a_closed_store_refuses_with_the_store_error(store: ObservatoryStore) -> None:
    await store.close()
    with pytest.raises(ObservatoryStoreError, match="not open") as refused:
        await store.lag(T0)
    assert isinstance(refused.value, FhirbotsError)


# -- factory ---------------------------------------------------------------------------------


def test_the_factory_follows_the_datastore(tmp_path: Path) -> None:
    embedded = create_observatory_store(None, tmp_path)
    assert isinstance(embedded, SqliteObservatoryStore)
    assert embedded.path == tmp_path / OBSERVATORY_DB
    distributed = create_observatory_store("postgresql://u@h/db", tmp_path)
    assert isinstance(distributed, PostgresObservatoryStore)


async def test_sessions_are_kept_until_they_expire_and_can_be_deleted(
    store: ObservatoryStore,
) -> None:
    now = datetime.now(UTC)
    await store.put_session("a", '{"n": 1}', now + timedelta(hours=1))
    await store.put_session("gone", '{"n": 2}', now - timedelta(seconds=1))
    assert await store.get_session("a") == '{"n": 1}'
    assert await store.get_session("gone") is None
    assert await store.get_session("unknown") is None
    await store.put_session("a", '{"n": 3}', now + timedelta(hours=1))
    assert await store.get_session("a") == '{"n": 3}'
    await store.delete_session("a")
    await store.delete_session("a")
    assert await store.get_session("a") is None
    assert await store.purge(now) >= 1  # the expired one
