"""The statistics faust app without a broker: keys and values of its table, the app it builds,
what a batch stores, what a closed window becomes. Against a broker:
``tests/integration/test_stats_faust.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings
from fhirbots.engine.eventlog.faust_app import FaustSettings
from fhirbots.engine.eventlog.port import Record
from fhirbots.engine.observatory.model import DURATION_BUCKETS_MS, WindowRow
from fhirbots.engine.observatory.store_sqlite import SqliteObservatoryStore
from fhirbots.engine.observatory.windows import WindowAggregator, bucket_of
from fhirbots.engine.settings import Settings
from fhirbots.engine.stages.stats import Count
from fhirbots.engine.stages.stats_faust import (
    STATS_APP_ID,
    WINDOWS_TABLE,
    StatsApp,
    StatsAppSettings,
    StatsTopics,
    add_counts,
    closed_row,
    count_delta,
    series_key,
)
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.topics import CHANGES, deadletter_topic

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

RENAMED = StatsTopics("c-x", "n-x", "d-x", "e-x")


def change(event_id: str) -> ChangeEvent:
    return ChangeEvent(
        event_id=event_id,
        project="p1",
        interaction="create",
        resource_type="Observation",
        resource_id=event_id,
        version_id="1",
        resource={"resourceType": "Observation"},
        time=T0,
        traceparent=f"00-{TRACE}-00f067aa0ba902b7-01",
    )


def test_a_series_key_and_a_window_value_become_the_row_the_aggregator_makes() -> None:
    counts = [
        Count("p1", "executions", ("Bot/b1", "success"), T0, 12.0),
        Count("p1", "executions", ("Bot/b1", "success"), T0, 900.0),
    ]
    value: list[float] = []
    for offset, count in enumerate(counts):
        value = add_counts(value, count_delta(count, offset))
    key = series_key(3, counts[0])

    partition, row = closed_row(key, T0.timestamp(), value)

    aggregator = WindowAggregator()
    for count in counts:
        aggregator.add(*count)
    assert partition == 3
    assert [row] == aggregator.flush(everything=True)


def test_a_record_processed_again_is_not_counted_again() -> None:
    count = Count("p1", "deliveries", ("s", "success"), T0, 3.0)
    value: list[float] = []
    for offset in (5, 6, 7, 6, 7, 8):  # 6 and 7 again after a rebalance
        value = add_counts(value, count_delta(count, offset))
    _partition, row = closed_row(series_key(0, count), T0.timestamp(), value)
    assert (row.count, row.total_ms, sum(row.buckets)) == (4, 12.0, 4)


def test_counts_without_durations_have_no_buckets_and_gain_them_with_one() -> None:
    plain = count_delta(Count("p1", "changes", ("Patient", "create"), T0), 0)
    assert plain == [1, 0.0, 0]
    timed = count_delta(Count("p1", "deliveries", ("s", "success"), T0, 3.0), 1)
    assert len(timed) == 3 + len(DURATION_BUCKETS_MS) + 1
    assert timed[3 + bucket_of(3.0)] == 1
    both = add_counts(plain, timed)
    assert both[:3] == [2, 3.0, 1]
    assert both[3:] == timed[3:]
    then_plain = add_counts(timed, count_delta(Count("p", "changes", (), T0), 2))
    assert then_plain[3:] == timed[3:]
    # Dims with separators or quotes survive the key.
    odd = Count("p|1", "notifications", ('sub"1', "a,b"), T0)
    _partition, row = closed_row(series_key(0, odd), T0.timestamp(), [1, 0.0, 0])
    assert (row.project, row.dims, row.start) == ("p|1", ('sub"1', "a,b"), T0)


def test_closed_rows_start_on_a_window_boundary() -> None:
    key = series_key(0, Count("p1", "changes", ("Patient", "create"), T0))
    _partition, row = closed_row(key, T0.timestamp() + 1e-6, [1, 0.0, 9])
    assert row.start == T0


def test_deployment_settings_need_kafka_and_name_the_group(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FHIRBOTS_KAFKA"):
        StatsAppSettings.from_settings(Settings(data_dir=tmp_path))
    settings = StatsAppSettings.from_settings(
        Settings(data_dir=tmp_path, kafka="127.0.0.1:1", retention_days=2)
    )
    assert settings.faust.app_id == STATS_APP_ID
    assert settings.faust.data_dir == tmp_path / "faust"
    assert settings.retention == timedelta(days=2)
    assert settings.lag_groups == (STATS_APP_ID,)
    assert settings.topics.sources()[CHANGES] == CHANGES


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteObservatoryStore]:
    opened = SqliteObservatoryStore(tmp_path / "observatory.db")
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def stats(tmp_path: Path, store: SqliteObservatoryStore) -> AsyncIterator[StatsApp]:
    log = EmbeddedEventLog(EmbeddedSettings(path=tmp_path / "log.db", synchronous="NORMAL"))
    await log.start()
    settings = StatsAppSettings(
        FaustSettings(
            app_id="unit-stats", bootstrap="127.0.0.1:1", data_dir=tmp_path / "faust", partitions=3
        ),
        retention=timedelta(days=2),
        topics=RENAMED,
    )
    yield StatsApp(settings, store, log)
    await log.stop()


def test_the_app_reads_the_four_topics_into_one_windowed_table(stats: StatsApp) -> None:
    assert sorted(stats.app.agents) == sorted(
        f"stats-{source}" for source in RENAMED.sources().values()
    )
    table = stats.app.tables[WINDOWS_TABLE]
    assert table.partitions == 3
    changelog = table.changelog_topic
    assert changelog.get_topic_name() == "unit-stats-windows-changelog"
    assert stats.upkeep.lag_ignores == {"unit-stats-windows-changelog"}  # never committed
    assert changelog.config is not None
    assert changelog.config["retention.ms"] == str(2 * 86400 * 1000)


async def test_a_batch_stores_steps_and_dead_letters_what_does_not_decode(
    stats: StatsApp, store: SqliteObservatoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[tuple[int, Count]] = []
    monkeypatch.setattr(
        stats, "count", lambda record, count: counted.append((record.offset, count))
    )
    good = Record("c-x", 2, 7, "k", change("e1").model_dump_json().encode(), (), T0)
    bad = Record("c-x", 1, 8, "k", b"{}", (("traceparent", b"x"),), T0)

    await stats.handle([good, bad], CHANGES)

    assert counted == [(7, Count("p1", "changes", ("Observation", "create"), T0))]
    [step] = await store.trace("p1", TRACE)
    assert (step.kind, step.ref, step.topic, step.partition, step.offset) == (
        "change",
        "e1",
        "c-x",
        2,
        7,
    )
    [dead] = await stats.event_log.read(deadletter_topic("c-x"), 0, offset=0)
    assert dead.value == b"{}"
    assert dead.header("fhirbots-source-offset") == b"8"


async def test_closed_windows_are_stored_then_deleted_from_the_changelog(
    stats: StatsApp, store: SqliteObservatoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[Any, ...]] = []

    def send_changelog(partition: int, key: Any, value: Any, **kwargs: Any) -> None:
        sent.append((partition, key, value))

    monkeypatch.setattr(stats.table, "send_changelog", send_changelog)
    count = Count("p1", "changes", ("Observation", "create"), T0)
    window = (T0.timestamp(), T0.timestamp() + 9.9)
    for partition in (0, 1):  # the same window of two partitions: two rows the store adds
        await stats.table.on_window_close((series_key(partition, count), window), [2, 0.0, 9])
    await stats.table.on_window_close((series_key(2, count), window), None)  # moved away: skipped

    assert await stats.write_closed() == 2

    until = T0 + timedelta(minutes=1)
    points = await store.series("p1", "changes", T0, until, until - T0)
    assert [(p.dims, p.count) for p in points] == [(("Observation", "create"), 4)]
    assert [(p, v) for p, _key, v in sent] == [(0, None), (1, None)]
    assert await stats.write_closed() == 0


async def test_rows_the_store_refused_are_written_next_time(
    stats: StatsApp, store: SqliteObservatoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats.table, "send_changelog", lambda *args, **kwargs: None)
    count = Count("p1", "changes", ("Observation", "create"), T0)
    await stats.table.on_window_close((series_key(0, count), (T0.timestamp(), 0.0)), [1, 0.0, 9])

    async def refuse(rows: list[WindowRow]) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store, "add_windows", refuse)
    assert await stats.write_closed() == 0
    monkeypatch.undo()
    monkeypatch.setattr(stats.table, "send_changelog", lambda *args, **kwargs: None)
    assert await stats.write_closed() == 1


async def test_restored_windows_close_and_every_partition_is_reported(stats: StatsApp) -> None:
    """What faust alone would not do (see ``_WindowTable``): schedule windows restored from
    the changelog, report the same window of two partitions, drop partitions moved away."""
    table = stats.table
    count = Count("p1", "changes", ("Observation", "create"), T0)
    window = (T0.timestamp(), T0.timestamp() + 9.9)
    for partition in (0, 1, 2):  # as a recovery leaves them: in the store, not scheduled
        table.data[(series_key(partition, count), window)] = [1, 0.0, partition]

    await table.on_rebalance({TP("c-x", 0), TP("c-x", 1), TP("other", 2)}, set(), set())
    await table.on_recovery_completed({TP("c-x", 0), TP("c-x", 1)}, set())
    await table._del_old_keys()  # faust's cleanup pass, due every close_every

    assert [(p, row.count) for p, _key, row in stats._closed] == [(0, 1), (1, 1)]
    assert not table.data
