"""Windowed aggregation: windows close after their grace period, quantiles from histograms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhirbots.engine.observatory.model import DURATION_BUCKETS_MS, WINDOW, WindowRow
from fhirbots.engine.observatory.windows import (
    GRACE,
    WindowAggregator,
    bucket_of,
    merge_buckets,
    quantile,
    summarise,
    window_start,
)

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


def test_window_start_is_a_multiple_of_the_width() -> None:
    assert window_start(T0 + timedelta(seconds=9.99)) == T0
    assert window_start(T0 + timedelta(seconds=10)) == T0 + WINDOW
    assert window_start(datetime(2026, 12, 6, 12, 0, 3)) == T0  # naive means UTC


def test_windows_are_flushed_once_closed_and_then_forgotten() -> None:
    agg = WindowAggregator()
    agg.add("p1", "changes", ("Patient", "create"), T0 + timedelta(seconds=1))
    agg.add("p1", "changes", ("Patient", "create"), T0 + timedelta(seconds=2))
    agg.add("p1", "changes", ("Patient", "update"), T0 + timedelta(seconds=3))
    agg.add("p2", "changes", ("Patient", "create"), T0 + timedelta(seconds=11))

    assert agg.flush(T0 + WINDOW + GRACE - timedelta(milliseconds=1)) == []
    rows = agg.flush(T0 + WINDOW + GRACE)
    assert [(r.project, r.dims, r.count) for r in rows] == [
        ("p1", ("Patient", "create"), 2),
        ("p1", ("Patient", "update"), 1),
    ]
    assert all(r.start == T0 and r.buckets == () for r in rows)
    assert len(agg) == 1
    assert [r.project for r in agg.flush(everything=True)] == ["p2"]
    assert len(agg) == 0


def test_a_late_record_opens_its_window_again() -> None:
    agg = WindowAggregator()
    agg.add("p1", "notifications", ("sub1",), T0)
    first = agg.flush(T0 + timedelta(minutes=1))
    agg.add("p1", "notifications", ("sub1",), T0 + timedelta(seconds=1))
    second = agg.flush(T0 + timedelta(minutes=1))
    assert [r.count for r in first + second] == [1, 1]
    assert first[0].start == second[0].start


def test_durations_fill_the_histogram() -> None:
    agg = WindowAggregator()
    for ms in (1.0, 2.0, 3.0, 1000.0):
        agg.add("p1", "executions", ("Bot/b", "success"), T0, duration_ms=ms)
    (row,) = agg.flush(everything=True)
    assert row.count == 4
    assert row.total_ms == 1006.0
    assert len(row.buckets) == len(DURATION_BUCKETS_MS) + 1
    assert sum(row.buckets) == 4
    assert row.buckets[bucket_of(1000.0)] == 1


def test_quantiles_err_high_by_at_most_one_bucket() -> None:
    buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)
    for ms in [5.0] * 98 + [400.0] * 2:
        buckets[bucket_of(ms)] += 1
    p50 = quantile(buckets, 0.5)
    p99 = quantile(buckets, 0.99)
    assert p50 is not None and 5.0 <= p50 < 5.0 * 1.42
    assert p99 is not None and 400.0 <= p99 < 400.0 * 1.42
    assert quantile([0] * 3, 0.5) is None
    over = [0] * (len(DURATION_BUCKETS_MS) + 1)
    over[-1] = 1
    assert quantile(over, 0.5) == DURATION_BUCKETS_MS[-1]


def test_merge_buckets_adds_and_accepts_empty() -> None:
    assert merge_buckets((), (1, 2)) == (1, 2)
    assert merge_buckets((1, 2), ()) == (1, 2)
    assert merge_buckets((1, 2), (3, 4)) == (4, 6)


def test_summarise_folds_windows_into_steps() -> None:
    def row(seconds: int, sub: str, count: int) -> WindowRow:
        return WindowRow("p1", "notifications", (sub,), T0 + timedelta(seconds=seconds), count)

    rows = [row(0, "a", 1), row(10, "a", 2), row(60, "a", 4), row(10, "b", 8)]
    points = summarise(rows, T0, timedelta(minutes=1))
    assert [(p.start, p.dims, p.count) for p in points] == [
        (T0, ("a",), 3),
        (T0, ("b",), 8),
        (T0 + timedelta(minutes=1), ("a",), 4),
    ]
    assert all(p.p50_ms is None for p in points)
