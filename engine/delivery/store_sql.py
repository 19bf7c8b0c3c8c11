"""SQL shared by the delivery store adapters (``?`` placeholders; PostgreSQL renumbers them).

Times are Unix seconds (floating point) in both databases, so both adapters compare them the
same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fhirbots.engine.delivery.store import Delivery, DeliveryState
from fhirbots.schemas.notifications import Notification

__all__ = [
    "COLUMNS",
    "SCHEMA",
    "dead_filter",
    "row_to_delivery",
]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS delivery_counter (
        project TEXT NOT NULL,
        subscription_id TEXT NOT NULL,
        last_number BIGINT NOT NULL,
        dead_streak INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (project, subscription_id))""",
    """CREATE TABLE IF NOT EXISTS delivery_notification (
        notification_id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        subscription_id TEXT NOT NULL,
        event_number BIGINT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        last_error TEXT,
        payload TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        UNIQUE (project, subscription_id, event_number))""",
    """CREATE TABLE IF NOT EXISTS delivery_heartbeat (
        project TEXT NOT NULL,
        subscription_id TEXT NOT NULL,
        period DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (project, subscription_id))""",
    """CREATE INDEX IF NOT EXISTS delivery_notification_state
        ON delivery_notification (state, project, subscription_id, event_number)""",
)
"""Tables, created idempotently on open."""

COLUMNS = (
    "payload, event_number, state, attempts, next_attempt_at, last_error, created_at, updated_at"
)
"""Columns :func:`row_to_delivery` reads, in order."""


def _time(value: float) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def row_to_delivery(row: Any) -> Delivery:
    """A :class:`Delivery` from a row of :data:`COLUMNS`."""
    state: DeliveryState = row[2]
    return Delivery(
        notification=Notification.model_validate(json.loads(row[0])),
        event_number=int(row[1]),
        state=state,
        attempts=int(row[3]),
        next_attempt_at=float(row[4]),
        last_error=row[5],
        created_at=_time(row[6]),
        updated_at=_time(row[7]),
    )


def dead_filter(
    project: str, notification_ids: Sequence[str] | None, subscription_id: str | None
) -> tuple[str, list[object]]:
    """WHERE clause (and its arguments) selecting dead letters of a project."""
    where = "project = ? AND state = 'dead'"
    args: list[object] = [project]
    if subscription_id is not None:
        where += " AND subscription_id = ?"
        args.append(subscription_id)
    if notification_ids is not None and not notification_ids:
        where += " AND 1 = 0"
    elif notification_ids is not None:
        where += f" AND notification_id IN ({','.join('?' * len(notification_ids))})"
        args.extend(notification_ids)
    return where, args
