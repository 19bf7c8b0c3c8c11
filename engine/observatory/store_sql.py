"""SQL shared by the observatory store adapters (``?`` placeholders; PostgreSQL renumbers them
with :func:`fhirbots.engine.storage.sql.numbered`), and the conversions between the store's
values and its rows.

Both databases run every statement here alike, so the adapters differ only in how they run
a statement and a transaction. Times are integer microseconds since the Unix epoch (UTC) in
both: exact, and compared the same way. Dims, summaries and execution records are JSON text.

A window's duration histogram is one column per bucket (:data:`BUCKET_COLUMNS`). Adding a
window is then a single upsert that adds counts, totals and buckets column by column
(:data:`ADD_WINDOW`): atomic in both databases, so two writers flushing the same window both
count, with nothing read back and merged in between. Charts are added up by the database
(:func:`windows_query`): a day's chart reads one row per series and step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from fhirbots.engine.observatory.model import (
    DURATION_BUCKETS_MS,
    ActivityRow,
    LagSample,
    Metric,
    SeriesPoint,
    WindowRow,
)
from fhirbots.engine.observatory.windows import merge_buckets, summarise
from fhirbots.engine.storage.migrations import Migration, SchemaHistory, fixed
from fhirbots.schemas.executions import BotExecutionRecord

__all__ = [
    "ADD_WINDOW",
    "BUCKET_COLUMNS",
    "DIM_COLUMNS",
    "HISTORY",
    "INSERT_ACTIVITY",
    "INSERT_EXECUTION",
    "INSERT_LAG",
    "PURGE",
    "SCHEMA",
    "SELECT_EXECUTION",
    "SELECT_TRACE",
    "SELECT_TRACE_OF",
    "activity_args",
    "activity_of",
    "combine",
    "execution_args",
    "execution_of",
    "executions_query",
    "from_us",
    "lag_args",
    "lag_of",
    "lag_query",
    "series_of",
    "to_us",
    "window_args",
    "windows_query",
]

DIM_COLUMNS = ("dim1", "dim2")
"""Columns holding the leading dims of a window, so that a dims filter runs in SQL. No metric
has more than two dims; a filter on a further position is applied after reading
(:func:`series_of`), which also checks these."""

BUCKET_COLUMNS = tuple(f"b{i}" for i in range(len(DURATION_BUCKETS_MS) + 1))
"""One column per bucket of the duration histogram, NULL in windows without durations: the
upsert adds histograms column by column in one statement, atomic in both databases, and a
chart's histograms are added up by the database (``SUM``), not row by row in Python. INTEGER:
no bucket of one 10 s window will count two billion events."""

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS observatory_window (
        project TEXT NOT NULL,
        metric TEXT NOT NULL,
        start_us BIGINT NOT NULL,
        dims TEXT NOT NULL,
        dim1 TEXT,
        dim2 TEXT,
        count BIGINT NOT NULL,
        total_ms DOUBLE PRECISION NOT NULL,
        {", ".join(f"{b} INTEGER" for b in BUCKET_COLUMNS)},
        PRIMARY KEY (project, metric, start_us, dims))""",
    # The primary key serves a project's charts; this one the admin charts (every project)
    # and the purge, which both select by time alone.
    """CREATE INDEX IF NOT EXISTS observatory_window_start
        ON observatory_window (start_us, metric)""",
    """CREATE TABLE IF NOT EXISTS observatory_lag (
        consumer_group TEXT NOT NULL,
        at_us BIGINT NOT NULL,
        events BIGINT NOT NULL,
        seconds DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS observatory_lag_at ON observatory_lag (at_us)",
    """CREATE TABLE IF NOT EXISTS observatory_execution (
        execution_id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        bot TEXT NOT NULL,
        status TEXT NOT NULL,
        started_us BIGINT NOT NULL,
        record TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS observatory_execution_started
        ON observatory_execution (project, started_us DESC)""",
    """CREATE INDEX IF NOT EXISTS observatory_execution_bot
        ON observatory_execution (project, bot, started_us DESC)""",
    # Failures are what an operator looks for, and they are rare: without this index a page
    # of them would walk every success of the day.
    """CREATE INDEX IF NOT EXISTS observatory_execution_status
        ON observatory_execution (project, status, started_us DESC)""",
    """CREATE INDEX IF NOT EXISTS observatory_execution_purge
        ON observatory_execution (started_us)""",
    """CREATE TABLE IF NOT EXISTS observatory_activity (
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        project TEXT NOT NULL,
        trace_id TEXT NOT NULL,
        parent TEXT,
        at_us BIGINT NOT NULL,
        duration_ms DOUBLE PRECISION,
        summary TEXT NOT NULL,
        topic TEXT,
        log_partition INTEGER,
        log_offset BIGINT,
        PRIMARY KEY (kind, ref))""",
    """CREATE INDEX IF NOT EXISTS observatory_activity_trace
        ON observatory_activity (project, trace_id, at_us)""",
    """CREATE INDEX IF NOT EXISTS observatory_activity_ref
        ON observatory_activity (project, ref)""",
    "CREATE INDEX IF NOT EXISTS observatory_activity_at ON observatory_activity (at_us)",
    """CREATE TABLE IF NOT EXISTS dashboard_session (
        token_hash TEXT PRIMARY KEY,
        session TEXT NOT NULL,
        expires_us BIGINT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS dashboard_session_expires ON dashboard_session (expires_us)",
)
"""Tables and indexes, created idempotently on open."""

HISTORY = SchemaHistory(
    "observatory",
    (
        Migration(
            1,
            "statistics windows, lag samples, execution records, trace steps, dashboard sessions",
            fixed(SCHEMA),
        ),
    ),
)
"""The store's schema migrations (:mod:`fhirbots.engine.storage.migrations`); a change to a
table is a new step here, never an edit of :data:`SCHEMA`."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_us(at: datetime) -> int:
    """Microseconds since the epoch of ``at`` (a naive time is taken as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (at - _EPOCH) // _MICROSECOND


def from_us(us: int) -> datetime:
    """The UTC time ``us`` microseconds after the epoch."""
    return _EPOCH + us * _MICROSECOND


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


# -- windows ---------------------------------------------------------------------------------

_WINDOW_COLUMNS = ("project", "metric", "start_us", "dims", "dim1", "dim2", "count", "total_ms")

ADD_WINDOW = (
    f"INSERT INTO observatory_window AS w ({', '.join(_WINDOW_COLUMNS + BUCKET_COLUMNS)})"
    f" VALUES ({', '.join('?' * (len(_WINDOW_COLUMNS) + len(BUCKET_COLUMNS)))})"
    " ON CONFLICT (project, metric, start_us, dims) DO UPDATE SET"
    " count = w.count + excluded.count, total_ms = w.total_ms + excluded.total_ms, "
    + ", ".join(
        f"{b} = COALESCE(w.{b} + excluded.{b}, w.{b}, excluded.{b})" for b in BUCKET_COLUMNS
    )
)
"""Adds a window to the one stored, if any (parameters: :func:`window_args`). ``COALESCE``
keeps a histogram when only one side has one. Columns are qualified because PostgreSQL finds a
bare ``count`` ambiguous (the row or ``excluded``)."""


def combine(rows: Iterable[WindowRow]) -> list[WindowRow]:
    """Rows of the same window added together, in key order: the order writers lock rows in,
    so that two of them never wait on each other's rows in a cycle."""
    combined: dict[tuple[str, str, datetime, tuple[str, ...]], WindowRow] = {}
    for row in rows:
        key = (row.project, row.metric, row.start, row.dims)
        seen = combined.get(key)
        combined[key] = (
            row
            if seen is None
            else WindowRow(
                row.project,
                row.metric,
                row.dims,
                row.start,
                seen.count + row.count,
                seen.total_ms + row.total_ms,
                merge_buckets(seen.buckets, row.buckets),
            )
        )
    return [combined[key] for key in sorted(combined)]


def window_args(row: WindowRow) -> tuple[object, ...]:
    """Parameters of :data:`ADD_WINDOW`.

    Raises:
        ValueError: The row's histogram does not have one count per bucket.
    """
    if row.buckets and len(row.buckets) != len(BUCKET_COLUMNS):
        raise ValueError(
            f"a histogram has {len(BUCKET_COLUMNS)} buckets, not {len(row.buckets)}"
            f" ({row.project} {row.metric} {row.dims} {row.start})"
        )
    leading = [row.dims[i] if i < len(row.dims) else None for i in range(len(DIM_COLUMNS))]
    return (
        row.project,
        row.metric,
        to_us(row.start),
        _json(row.dims),
        *leading,
        row.count,
        float(row.total_ms),
        *(row.buckets or (None,) * len(BUCKET_COLUMNS)),
    )


def windows_query(
    project: str | None,
    metric: Metric,
    since: datetime,
    until: datetime,
    step: timedelta,
    dims: tuple[str | None, ...],
) -> tuple[str, list[object]]:
    """The statement adding up the windows of a chart per series and step, and its parameters
    (see :meth:`fhirbots.engine.observatory.store.ObservatoryStore.series`); read its rows
    with :func:`series_of`.

    The database adds them, so a day's chart reads one row per series and step, not 8,640 per
    series. Steps are counted from ``since``, as :func:`summarise` does.
    """
    sums = ", ".join(f"SUM({b})" for b in BUCKET_COLUMNS)
    statement = (
        "SELECT dims, (start_us - ?) / ? AS step_index, SUM(count), SUM(total_ms),"
        f" {sums} FROM observatory_window WHERE"
    )
    args: list[object] = [to_us(since), step // _MICROSECOND]
    if project is not None:
        statement += " project = ? AND"
        args.append(project)
    statement += " metric = ? AND start_us >= ? AND start_us < ?"
    args += [metric, to_us(since), to_us(until)]
    for column, want in zip(DIM_COLUMNS, dims, strict=False):
        if want is not None:
            statement += f" AND {column} = ?"
            args.append(want)
    return statement + " GROUP BY dims, step_index", args


def series_of(
    rows: Iterable[Sequence[Any]],
    metric: Metric,
    since: datetime,
    step: timedelta,
    dims: tuple[str | None, ...],
) -> list[SeriesPoint]:
    """Chart points from the rows of :func:`windows_query`."""
    further = list(enumerate(dims))[len(DIM_COLUMNS) :]
    windows = []
    for row in rows:
        row_dims = tuple(orjson.loads(row[0]))
        if any(w is not None and (i >= len(row_dims) or row_dims[i] != w) for i, w in further):
            continue
        # A window has all bucket columns or none (no durations); SUM of an integer column is
        # numeric on PostgreSQL.
        buckets = () if row[4] is None else tuple(int(b) for b in row[4:])
        windows.append(
            WindowRow(
                "",  # summarise adds projects together: which one a row came from is moot
                metric,
                row_dims,
                since + int(row[1]) * step,
                int(row[2]),
                float(row[3]),
                buckets,
            )
        )
    return summarise(windows, since, step)


# -- lag -------------------------------------------------------------------------------------

INSERT_LAG = (
    "INSERT INTO observatory_lag (consumer_group, at_us, events, seconds) VALUES (?, ?, ?, ?)"
)


def lag_args(sample: LagSample) -> tuple[object, ...]:
    """Parameters of :data:`INSERT_LAG`."""
    return (sample.group, to_us(sample.at), sample.events, float(sample.seconds))


def lag_query(since: datetime, group: str | None) -> tuple[str, list[object]]:
    """The statement reading lag samples and its parameters; rows for :func:`lag_of`."""
    statement = (
        "SELECT consumer_group, at_us, events, seconds FROM observatory_lag WHERE at_us >= ?"
    )
    args: list[object] = [to_us(since)]
    if group is not None:
        statement += " AND consumer_group = ?"
        args.append(group)
    return statement + " ORDER BY at_us, consumer_group", args


def lag_of(row: Sequence[Any]) -> LagSample:
    """A lag sample from a row of :func:`lag_query`."""
    return LagSample(row[0], from_us(row[1]), int(row[2]), float(row[3]))


# -- executions ------------------------------------------------------------------------------

INSERT_EXECUTION = (
    "INSERT INTO observatory_execution (execution_id, project, bot, status, started_us, record)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (execution_id) DO NOTHING"
)
"""Stores a record once: a record delivered twice by the topic keeps the first copy."""

SELECT_EXECUTION = "SELECT record FROM observatory_execution WHERE project = ? AND execution_id = ?"


def execution_args(record: BotExecutionRecord) -> tuple[object, ...]:
    """Parameters of :data:`INSERT_EXECUTION`."""
    return (
        record.execution_id,
        record.project,
        record.bot,
        record.status,
        to_us(record.started),
        record.model_dump_json(),
    )


def executions_query(
    project: str,
    bot: str | None,
    status: str | None,
    before: datetime | None,
    limit: int,
) -> tuple[str, list[object]]:
    """The statement reading a page of execution records and its parameters (see
    :meth:`fhirbots.engine.observatory.store.ObservatoryStore.executions`); rows for
    :func:`execution_of`."""
    statement = "SELECT record FROM observatory_execution WHERE project = ?"
    args: list[object] = [project]
    if bot is not None:
        statement += " AND bot = ?"
        args.append(bot)
    if status is not None:
        statement += " AND status = ?"
        args.append(status)
    if before is not None:
        statement += " AND started_us < ?"
        args.append(to_us(before))
    args.append(limit)
    return statement + " ORDER BY started_us DESC, execution_id DESC LIMIT ?", args


def execution_of(row: Sequence[Any]) -> BotExecutionRecord:
    """An execution record from a row whose first column is ``record``."""
    return BotExecutionRecord.model_validate_json(row[0])


# -- activity --------------------------------------------------------------------------------

_ACTIVITY_COLUMNS = (
    "project, trace_id, kind, ref, parent, at_us, duration_ms, summary, topic, log_partition,"
    " log_offset"
)

INSERT_ACTIVITY = (
    f"INSERT INTO observatory_activity ({_ACTIVITY_COLUMNS})"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kind, ref) DO NOTHING"
)
"""Stores a trace step once (by kind and ref)."""

SELECT_TRACE = (
    f"SELECT {_ACTIVITY_COLUMNS} FROM observatory_activity WHERE project = ? AND trace_id = ?"
    " ORDER BY at_us, kind, ref"
)
"""Every step of a trace, oldest first; rows for :func:`activity_of`."""

SELECT_TRACE_OF = "SELECT trace_id FROM observatory_activity WHERE project = ? AND ref = ? LIMIT 1"


def activity_args(row: ActivityRow) -> tuple[object, ...]:
    """Parameters of :data:`INSERT_ACTIVITY`."""
    return (
        row.project,
        row.trace_id,
        row.kind,
        row.ref,
        row.parent,
        to_us(row.at),
        None if row.duration_ms is None else float(row.duration_ms),
        _json(row.summary),
        row.topic,
        row.partition,
        row.offset,
    )


def activity_of(row: Sequence[Any]) -> ActivityRow:
    """A trace step from a row of :data:`SELECT_TRACE`."""
    return ActivityRow(
        project=row[0],
        trace_id=row[1],
        kind=row[2],
        ref=row[3],
        parent=row[4],
        at=from_us(row[5]),
        duration_ms=None if row[6] is None else float(row[6]),
        summary=orjson.loads(row[7]),
        topic=row[8],
        partition=row[9],
        offset=row[10],
    )


# -- dashboard sessions ----------------------------------------------------------------------

PUT_SESSION = (
    "INSERT INTO dashboard_session (token_hash, session, expires_us) VALUES (?, ?, ?)"
    " ON CONFLICT (token_hash) DO UPDATE SET session = excluded.session,"
    " expires_us = excluded.expires_us"
)
SELECT_SESSION = "SELECT session FROM dashboard_session WHERE token_hash = ? AND expires_us > ?"
DELETE_SESSION = "DELETE FROM dashboard_session WHERE token_hash = ?"


# -- retention -------------------------------------------------------------------------------

PURGE = (
    "DELETE FROM observatory_window WHERE start_us < ?",
    "DELETE FROM observatory_lag WHERE at_us < ?",
    "DELETE FROM observatory_execution WHERE started_us < ?",
    "DELETE FROM observatory_activity WHERE at_us < ?",
    "DELETE FROM dashboard_session WHERE expires_us < ?",
)
"""Deletes what is older than the cutoff (one parameter, :func:`to_us`), one table each."""
