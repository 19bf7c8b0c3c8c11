"""The observatory store port: statistics windows, lag samples, execution records, traces.

Adapters: SQLite (``observatory.db`` in the data dir, embedded mode) and PostgreSQL (tables of
their own in the datastore's database, distributed mode). The statistics stage writes; the
dashboard reads. Everything is kept for the configured retention and then purged.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from fhirbots.engine.observatory.model import ActivityRow, LagSample, Metric, SeriesPoint, WindowRow
from fhirbots.schemas.executions import BotExecutionRecord

__all__ = ["ObservatoryStore"]


class ObservatoryStore(Protocol):
    """Where the dashboard's data lives."""

    async def open(self) -> None:
        """Create the tables if needed and connect."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def add_windows(self, rows: Sequence[WindowRow]) -> None:
        """Add ``rows`` to the windows stored: counts, totals and buckets of a window that is
        already there are summed with the new ones."""
        ...

    async def add_lag(self, samples: Sequence[LagSample]) -> None:
        """Store consumer-lag samples."""
        ...

    async def add_executions(self, records: Sequence[BotExecutionRecord]) -> None:
        """Store execution records (a record already stored, by execution id, is kept)."""
        ...

    async def add_activity(self, rows: Sequence[ActivityRow]) -> None:
        """Store trace steps (a step already stored, by kind and ref, is kept)."""
        ...

    async def series(
        self,
        project: str | None,
        metric: Metric,
        since: datetime,
        until: datetime,
        step: timedelta,
        dims: tuple[str | None, ...] = (),
    ) -> list[SeriesPoint]:
        """Counts (and duration quantiles) of ``metric`` per series and step.

        Args:
            project: One project, or None for all (admin views).
            metric: What to read.
            since: First window included.
            until: Windows starting before this are included.
            step: Width of a point (a multiple of the window); ``until - since`` gives one
                total per series.
            dims: Filter on the leading dims; None at a position matches anything.

        Returns:
            Points ordered by start, then dims.
        """
        ...

    async def lag(self, since: datetime, group: str | None = None) -> list[LagSample]:
        """Lag samples taken at or after ``since`` (of one group, or all), oldest first."""
        ...

    async def executions(
        self,
        project: str,
        *,
        bot: str | None = None,
        status: str | None = None,
        before: datetime | None = None,
        limit: int = 50,
    ) -> list[BotExecutionRecord]:
        """Execution records of a project, newest first, filtered by ``Bot/<id>`` and status,
        started before ``before`` (for paging)."""
        ...

    async def execution(self, project: str, execution_id: str) -> BotExecutionRecord | None:
        """One execution record, or None."""
        ...

    async def trace(self, project: str, trace_id: str) -> list[ActivityRow]:
        """Every step of a trace in a project, oldest first."""
        ...

    async def trace_of(self, project: str, ref: str) -> str | None:
        """The trace id of the step whose ref is ``ref``, or None."""
        ...

    async def put_session(self, token_hash: str, session: str, expires: datetime) -> None:
        """Store (or replace) a dashboard session: opaque JSON, kept until ``expires``."""
        ...

    async def get_session(self, token_hash: str) -> str | None:
        """The JSON of an unexpired session, or None."""
        ...

    async def delete_session(self, token_hash: str) -> None:
        """Forget a session (no error when there is none)."""
        ...

    async def purge(self, before: datetime) -> int:
        """Delete windows, samples, records and steps older than ``before`` (and sessions
        expired by then); returns how many rows went."""
        ...
