"""The delivery store port: event numbers, the notification log, attempts and dead letters.

Two adapters: :class:`fhirbots.engine.delivery.store_sqlite.SqliteDeliveryStore` (a file of its own
in
the data dir) and :class:`fhirbots.engine.delivery.store_postgres.PostgresDeliveryStore` (tables of
its own in the datastore's database). Both keep one row per notification:

* ``accept`` gives a new notification its subscription's next event number in the same
  transaction that stores it; accepting the same notification id again returns the number it
  already has (a redelivered topic record never gets a second number);
* the row stays ``pending`` until delivered, then ``delivered``; after the last failed attempt
  it becomes ``dead`` (a dead letter), which ``requeue`` turns back into ``pending`` with its
  number unchanged, or ``discard`` into ``discarded``;
* rows are retained after delivery for ``Subscription/$events`` and ``$resend``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from fhirbots.schemas.notifications import Notification

__all__ = [
    "Accepted",
    "Delivery",
    "DeliveryState",
    "DeliveryStore",
    "SubscriptionCounters",
]

DeliveryState = Literal["pending", "delivered", "dead", "discarded"]
"""Where a notification is in its life."""


@dataclass(frozen=True)
class Accepted:
    """A notification as accepted: its event number and whether it was new."""

    notification_id: str
    project: str
    subscription_id: str
    event_number: int
    new: bool


@dataclass(frozen=True)
class Delivery:
    """A notification with its event number and delivery state."""

    notification: Notification
    event_number: int
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    """Unix time before which the next attempt is not made."""
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def notification_id(self) -> str:
        """Id of the notification."""
        return self.notification.notification_id

    @property
    def project(self) -> str:
        """Project of the subscription."""
        return self.notification.project

    @property
    def subscription_id(self) -> str:
        """Id of the subscription."""
        return self.notification.subscription_id


@dataclass(frozen=True)
class SubscriptionCounters:
    """Per-subscription counters kept by the store."""

    events_since_start: int = 0
    """Event numbers given so far (the last event number)."""
    dead_streak: int = 0
    """Notifications dead-lettered in a row since the last delivery."""


class DeliveryStore(Protocol):
    """Durable delivery state shared by every dispatcher of one engine."""

    async def open(self) -> None:
        """Connect and create the tables if needed."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

    async def accept(self, notifications: Sequence[Notification]) -> list[Accepted]:
        """Store notifications with their event numbers, in one transaction, in order."""
        ...

    async def get(self, project: str, notification_id: str) -> Delivery | None:
        """One notification by id."""
        ...

    async def pending(
        self, project: str, subscription_id: str, *, limit: int = 100
    ) -> list[Delivery]:
        """The subscription's pending notifications, lowest event number first."""
        ...

    async def pending_subscriptions(self) -> list[tuple[str, str]]:
        """(project, subscription id) of every subscription with pending notifications."""
        ...

    async def record_failure(
        self, notification_id: str, attempts: int, next_attempt_at: float, error: str
    ) -> None:
        """A failed attempt that will be retried at ``next_attempt_at``."""
        ...

    async def mark_delivered(self, delivered: Sequence[tuple[str, int]]) -> None:
        """(notification id, attempts) pairs delivered, in one transaction; the dead streaks
        of their subscriptions are reset."""
        ...

    async def mark_dead(self, notification_id: str, attempts: int, error: str) -> int:
        """The last attempt failed: a dead letter. Returns the subscription's dead streak."""
        ...

    async def counters(self, project: str, subscription_id: str) -> SubscriptionCounters:
        """The subscription's counters (zeros if it never had a notification)."""
        ...

    async def events(
        self,
        project: str,
        subscription_id: str,
        *,
        first: int | None = None,
        last: int | None = None,
        limit: int = 100,
    ) -> list[Delivery]:
        """Retained notifications with event numbers in ``[first, last]``, ascending."""
        ...

    async def last_event(self, project: str, subscription_id: str) -> Delivery | None:
        """The subscription's notification with the highest event number, if any."""
        ...

    async def dead_letters(
        self, project: str, subscription_id: str | None = None, *, limit: int = 100
    ) -> list[Delivery]:
        """Dead letters of a project (or one subscription), oldest first."""
        ...

    async def requeue(
        self,
        project: str,
        notification_ids: Sequence[str] | None = None,
        subscription_id: str | None = None,
    ) -> list[tuple[str, str]]:
        """Dead letters back to pending (all of them when no ids are given), attempts reset.

        Returns:
            (project, subscription id) of each requeued row.
        """
        ...

    async def discard(
        self,
        project: str,
        notification_ids: Sequence[str] | None = None,
        subscription_id: str | None = None,
    ) -> int:
        """Dead letters dropped for good (all of them when no ids are given); returns count."""
        ...

    async def set_heartbeat(self, project: str, subscription_id: str, period: float | None) -> None:
        """Register (or with None, forget) a subscription that gets heartbeats every period."""
        ...

    async def heartbeats(self) -> list[tuple[str, str, float]]:
        """(project, subscription id, period in seconds) of every registered heartbeat."""
        ...

    async def purge(self, before: datetime) -> int:
        """Delete delivered and discarded rows last changed before ``before``."""
        ...
