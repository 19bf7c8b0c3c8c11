"""Windowed aggregation, pure: records in, :class:`WindowRow` values out.

The same code runs in-process in embedded mode and inside the faust worker in Kafka mode, so
both modes draw the same charts. A :class:`WindowAggregator` keeps the windows still open in
memory; :meth:`WindowAggregator.flush` hands out every window that has closed (its end is more
than a grace period in the past) and forgets it. A record that arrives for a window already
flushed opens it again and is flushed as a second row; the store adds the two.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fhirbots.engine.observatory.model import (
    DURATION_BUCKETS_MS,
    WINDOW,
    Metric,
    SeriesPoint,
    WindowRow,
)

__all__ = [
    "GRACE",
    "WindowAggregator",
    "bucket_of",
    "merge_buckets",
    "quantile",
    "summarise",
    "window_start",
]

GRACE = timedelta(seconds=5)
"""How long after its end a window stays open for records that arrive late (a consumer that
was behind, a partition moved to another worker)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(at: datetime, width: timedelta = WINDOW) -> datetime:
    """Start of the window of width ``width`` that ``at`` falls in (UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    elapsed = (at - _EPOCH) // width
    return _EPOCH + elapsed * width


def bucket_of(duration_ms: float) -> int:
    """Index of the histogram bucket a duration falls in (the last one past every bound)."""
    return bisect.bisect_left(DURATION_BUCKETS_MS, duration_ms)


def merge_buckets(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """Bucket-wise sum of two histograms (either may be empty)."""
    if not a:
        return tuple(b)
    if not b:
        return tuple(a)
    return tuple(x + y for x, y in zip(a, b, strict=True))


def quantile(buckets: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q <= 1) of a duration histogram, in ms; None when empty.

    Reported as the upper bound of the bucket holding it (the last bucket, unbounded, reports
    the largest bound): an estimate that errs high, never low.
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return DURATION_BUCKETS_MS[min(index, len(DURATION_BUCKETS_MS) - 1)]
    return DURATION_BUCKETS_MS[-1]


@dataclass
class _Open:
    count: int = 0
    total_ms: float = 0.0
    buckets: list[int] = field(default_factory=list)


class WindowAggregator:
    """Counts events per (project, metric, dims) in tumbling windows.

    Args:
        width: Window width.
        grace: How long after its end a window waits for late records before it is flushed.
    """

    def __init__(self, width: timedelta = WINDOW, grace: timedelta = GRACE) -> None:
        self._width = width
        self._grace = grace
        self._open: dict[tuple[str, Metric, tuple[str, ...], datetime], _Open] = {}

    def add(
        self,
        project: str,
        metric: Metric,
        dims: tuple[str, ...],
        at: datetime,
        duration_ms: float | None = None,
    ) -> None:
        """Count one event at ``at``; with a duration, add it to the window's histogram."""
        key = (project, metric, dims, window_start(at, self._width))
        window = self._open.get(key)
        if window is None:
            window = self._open[key] = _Open()
        window.count += 1
        if duration_ms is not None:
            if not window.buckets:
                window.buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)
            window.total_ms += duration_ms
            window.buckets[bucket_of(duration_ms)] += 1

    def flush(self, now: datetime | None = None, *, everything: bool = False) -> list[WindowRow]:
        """Hand out and forget the windows that closed before ``now`` (all with
        ``everything``, when the stage stops)."""
        now = now or datetime.now(UTC)
        closed = [
            key for key in self._open if everything or key[3] + self._width + self._grace <= now
        ]
        rows = []
        for key in sorted(closed, key=lambda k: (k[3], k[0], k[1], k[2])):
            window = self._open.pop(key)
            project, metric, dims, start = key
            rows.append(
                WindowRow(
                    project,
                    metric,
                    dims,
                    start,
                    window.count,
                    window.total_ms,
                    tuple(window.buckets),
                )
            )
        return rows

    def __len__(self) -> int:
        """Windows still open."""
        return len(self._open)


def summarise(rows: Iterable[WindowRow], since: datetime, step: timedelta) -> list[SeriesPoint]:
    """Points of ``step`` width from window rows (one metric): counts added, histograms merged,
    quantiles read from the merged histograms. Used by the store adapters after they read the
    rows of a time range."""
    points: dict[tuple[datetime, tuple[str, ...]], tuple[int, tuple[int, ...]]] = {}
    for row in rows:
        offset = (row.start - since) // step
        start = since + offset * step
        count, buckets = points.get((start, row.dims), (0, ()))
        points[(start, row.dims)] = (count + row.count, merge_buckets(buckets, row.buckets))
    return [
        SeriesPoint(start, dims, count, quantile(buckets, 0.5), quantile(buckets, 0.99))
        for (start, dims), (count, buckets) in sorted(points.items())
    ]
