"""SQL shared by the delivery store adapters (``?`` placeholders; PostgreSQL renumbers them
with :func:`fhirbots.engine.storage.sql.numbered`).

Every statement both databases run alike is here, once. The adapters keep only what differs:
marking deliveries and dead letters, which SQLite does row by row inside its transaction and
PostgreSQL in one statement (``unnest`` of arrays, an ``UPDATE`` inside ``WITH``).

Times are Unix seconds (floating point) in both databases, so both adapters compare them the
same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fhirbots.engine.delivery.store import Delivery, DeliveryState
from fhirbots.engine.storage.migrations import Migration, SchemaHistory, fixed
from fhirbots.schemas.notifications import Notification

__all__ = [
    "COLUMNS",
    "DELETE_HEARTBEAT",
    "HISTORY",
    "INSERT_NOTIFICATION",
    "MARK_DEAD",
    "NEXT_EVENT_NUMBER",
    "PURGE",
    "RECORD_FAILURE",
    "SCHEMA",
    "SELECT_COUNTERS",
    "SELECT_DELIVERY",
    "SELECT_EVENTS",
    "SELECT_EVENT_NUMBER",
    "SELECT_HEARTBEATS",
    "SELECT_LAST_EVENT",
    "SELECT_PENDING",
    "SELECT_PENDING_SUBSCRIPTIONS",
    "UPSERT_HEARTBEAT",
    "dead_filter",
    "discard_dead",
    "requeue_dead",
    "row_to_delivery",
    "select_dead",
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

HISTORY = SchemaHistory(
    "delivery",
    (
        Migration(
            1, "event-number counters, pending notifications, dispatcher heartbeats", fixed(SCHEMA)
        ),
    ),
)
"""The store's schema migrations (:mod:`fhirbots.engine.storage.migrations`); a change to a
table is a new step here, never an edit of :data:`SCHEMA`."""

COLUMNS = (
    "payload, event_number, state, attempts, next_attempt_at, last_error, created_at, updated_at"
)
"""Columns :func:`row_to_delivery` reads, in order."""

# -- writes ----------------------------------------------------------------------------------

SELECT_EVENT_NUMBER = "SELECT event_number FROM delivery_notification WHERE notification_id = ?"
"""The event number of a notification already accepted (accepting is idempotent)."""

NEXT_EVENT_NUMBER = (
    "INSERT INTO delivery_counter (project, subscription_id, last_number) VALUES (?, ?, 1)"
    " ON CONFLICT (project, subscription_id)"
    " DO UPDATE SET last_number = delivery_counter.last_number + 1 RETURNING last_number"
)
"""Takes the subscription's next event number. The column is qualified because PostgreSQL
finds a bare ``last_number`` ambiguous (the row or ``excluded``); on PostgreSQL the upsert
row-locks the counter until the accepting transaction commits, so no number is given twice."""

INSERT_NOTIFICATION = (
    "INSERT INTO delivery_notification (notification_id, project, subscription_id,"
    " event_number, state, payload, created_at, updated_at)"
    " VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)"
)

RECORD_FAILURE = (
    "UPDATE delivery_notification SET attempts = ?, next_attempt_at = ?, last_error = ?,"
    " updated_at = ? WHERE notification_id = ?"
)

MARK_DEAD = (
    "UPDATE delivery_notification SET state = 'dead', attempts = ?, last_error = ?,"
    " updated_at = ? WHERE notification_id = ? RETURNING project, subscription_id"
)
"""Dead-letters one notification; returns its subscription, whose ``dead_streak`` the adapter
then counts up (PostgreSQL in the same statement)."""

DELETE_HEARTBEAT = "DELETE FROM delivery_heartbeat WHERE project = ? AND subscription_id = ?"

UPSERT_HEARTBEAT = (
    "INSERT INTO delivery_heartbeat (project, subscription_id, period) VALUES (?, ?, ?)"
    " ON CONFLICT (project, subscription_id) DO UPDATE SET period = excluded.period"
)

PURGE = (
    "DELETE FROM delivery_notification WHERE state IN ('delivered', 'discarded') AND updated_at < ?"
)


def requeue_dead(where: str) -> str:
    """Puts the dead letters :func:`dead_filter` selects back to ``pending``; its arguments
    follow the new ``updated_at``. Returns each requeued notification's subscription."""
    return (
        "UPDATE delivery_notification SET state = 'pending', attempts = 0, next_attempt_at = 0,"
        f" updated_at = ? WHERE {where} RETURNING project, subscription_id"
    )


def discard_dead(where: str) -> str:
    """Marks the dead letters :func:`dead_filter` selects ``discarded``; its arguments follow
    the new ``updated_at``."""
    return f"UPDATE delivery_notification SET state = 'discarded', updated_at = ? WHERE {where}"


# -- reads -----------------------------------------------------------------------------------

SELECT_HEARTBEATS = "SELECT project, subscription_id, period FROM delivery_heartbeat"

SELECT_DELIVERY = (
    f"SELECT {COLUMNS} FROM delivery_notification WHERE notification_id = ? AND project = ?"
)

SELECT_PENDING = (
    f"SELECT {COLUMNS} FROM delivery_notification WHERE state = 'pending'"
    " AND project = ? AND subscription_id = ? ORDER BY event_number LIMIT ?"
)

SELECT_PENDING_SUBSCRIPTIONS = (
    "SELECT DISTINCT project, subscription_id FROM delivery_notification WHERE state = 'pending'"
)

SELECT_COUNTERS = (
    "SELECT last_number, dead_streak FROM delivery_counter"
    " WHERE project = ? AND subscription_id = ?"
)

SELECT_EVENTS = (
    f"SELECT {COLUMNS} FROM delivery_notification WHERE project = ? AND subscription_id = ?"
    " AND event_number >= ? AND event_number <= ? ORDER BY event_number LIMIT ?"
)

SELECT_LAST_EVENT = (
    f"SELECT {COLUMNS} FROM delivery_notification WHERE project = ? AND subscription_id = ?"
    " ORDER BY event_number DESC LIMIT 1"
)


def select_dead(where: str) -> str:
    """The dead letters :func:`dead_filter` selects, oldest first; ``LIMIT ?`` follows its
    arguments."""
    return (
        f"SELECT {COLUMNS} FROM delivery_notification WHERE {where}"
        " ORDER BY updated_at, event_number LIMIT ?"
    )


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
