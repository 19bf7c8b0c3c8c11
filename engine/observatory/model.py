"""Values the observatory store takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

__all__ = [
    "DURATION_BUCKETS_MS",
    "WINDOW",
    "ActivityKind",
    "ActivityRow",
    "LagSample",
    "Metric",
    "SeriesPoint",
    "WindowRow",
]

WINDOW = timedelta(seconds=10)
"""Width of a tumbling statistics window: 360 points make an hour's chart, fine enough to see
a burst, coarse enough that a day is 8,640 rows per series."""

DURATION_BUCKETS_MS: tuple[float, ...] = tuple(round(0.25 * 2 ** (i / 2), 3) for i in range(0, 48))
"""Upper bounds of the duration histogram (ms), each √2 times the one before, from 0.25 ms to
about 2.8 hours; a quantile read from it is within about 20% of the true value. One more
bucket (past the last bound) counts the rest."""

Metric = Literal["changes", "notifications", "deliveries", "executions"]
"""What a window counts.

``changes``: dims (resource type, interaction). ``notifications``: dims (subscription id,).
``deliveries``: dims (subscription id, outcome). ``executions``: dims (``Bot/<id>``, status).
"""

ActivityKind = Literal["change", "notification", "delivery", "execution"]


@dataclass(frozen=True)
class WindowRow:
    """The count (and durations) of one series in one window of one project.

    Adding two rows of the same (project, metric, dims, start) adds their counts, totals and
    buckets: a window flushed twice (a late record, a restarted stage) loses nothing.

    Attributes:
        project: The project the events belong to.
        metric: What is counted.
        dims: The series within the metric (see :data:`Metric`).
        start: Start of the window (UTC, a multiple of :data:`WINDOW` since the epoch).
        count: Events in the window.
        total_ms: Sum of their durations (deliveries and executions; 0 otherwise).
        buckets: Duration histogram, one count per bound of :data:`DURATION_BUCKETS_MS` and one
            for the rest; empty for metrics without durations.
    """

    project: str
    metric: Metric
    dims: tuple[str, ...]
    start: datetime
    count: int
    total_ms: float = 0.0
    buckets: tuple[int, ...] = ()


@dataclass(frozen=True)
class LagSample:
    """How far behind a consumer group was at one moment.

    Attributes:
        group: The consumer group.
        at: When it was measured (UTC).
        events: Records published but not yet committed by the group, over all partitions.
        seconds: Age of the oldest such record (0 when there is none).
    """

    group: str
    at: datetime
    events: int
    seconds: float


@dataclass(frozen=True)
class ActivityRow:
    """One step of a trace: a change, a notification, a delivery attempt or a bot execution.

    The trace view of the dashboard is the tree these rows make through ``parent``.

    Attributes:
        project: The project it belongs to.
        trace_id: W3C trace id it carries.
        kind: What it is.
        ref: Its id (change event id, notification id, attempt id, execution id).
        parent: The ``ref`` of the step that caused it (None for the first write).
        at: When it happened (UTC).
        duration_ms: How long it took, where that means something.
        summary: A few fields to show without opening the full record.
        topic: Topic of the full record, for the event browser.
        partition: Its partition.
        offset: Its offset.
    """

    project: str
    trace_id: str
    kind: ActivityKind
    ref: str
    parent: str | None
    at: datetime
    duration_ms: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class SeriesPoint:
    """A series' value over one step of a chart (a step spans one or more windows).

    Attributes:
        start: Start of the step.
        dims: The series.
        count: Events in the step.
        p50_ms: Median duration (None without durations).
        p99_ms: 99th percentile duration (None without durations).
    """

    start: datetime
    dims: tuple[str, ...]
    count: int
    p50_ms: float | None = None
    p99_ms: float | None = None
