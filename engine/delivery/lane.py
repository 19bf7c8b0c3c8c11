"""One subscription's delivery lane: its pending notifications, in event-number order.

A lane delivers the lowest pending event number first and does not start the next one until
it is delivered or dead-lettered, so a subscription's receiver sees its events in order.
Retries wait in the lane (their back-off recorded in the store, so a restart resumes them
with the same event number and attempt count). Lanes are independent tasks: a slow or dead
endpoint holds only its own lane, never another subscription's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import structlog

from fhirbots.engine.delivery import metrics
from fhirbots.engine.delivery.attempt import AttemptResult
from fhirbots.engine.delivery.lifecycle import Lifecycle, attempt_audit_event
from fhirbots.engine.delivery.marker import DeliveredMarker
from fhirbots.engine.delivery.policy import DeliveryDefaults
from fhirbots.engine.delivery.records import AttemptLog, attempt_record
from fhirbots.engine.delivery.sender import Sender, channel_name
from fhirbots.engine.delivery.store import Delivery, DeliveryStore
from fhirbots.engine.delivery.subscriptions import SubscriptionInfo, SubscriptionRegistry
from fhirbots.schemas.deliveries import DeliveryOutcome

__all__ = ["IDLE_SECONDS", "PAGE", "QUEUE_LIMIT", "Lane", "LaneContext"]

PAGE = 100
"""Pending notifications read from the store at once."""

QUEUE_LIMIT = 1000
"""Notifications a lane holds in memory; beyond, it reads them from the store when ready."""

IDLE_SECONDS = 30.0
"""A lane with nothing to do ends after this long (the next notification starts a new one)."""

_log = structlog.get_logger("fhirbots.engine.delivery")


@dataclass(frozen=True)
class LaneContext:
    """What every lane shares."""

    store: DeliveryStore
    registry: SubscriptionRegistry
    lifecycle: Lifecycle
    sender: Sender
    defaults: DeliveryDefaults
    concurrency: asyncio.Semaphore
    marker: DeliveredMarker
    owns: Callable[[str, str], bool]
    """Whether this dispatcher currently owns the subscription (its partition)."""
    delivered: Callable[[str, str], None]
    """Called after each delivery (heartbeats count from the last notification)."""
    records: AttemptLog | None = None
    """Where each attempt's record goes (``fhir.deliveries.v1``), if anywhere."""


def _version(text: str) -> int:
    return int(text) if text.isdigit() else 0


class Lane:
    """The delivery task of one subscription.

    Notifications reach the lane in memory, straight from intake (:meth:`offer`), so the
    common path never reads the store. The in-memory queue is bounded by :data:`QUEUE_LIMIT`;
    beyond it, or after a restart or a requeue, the lane *reloads*: once its queue is empty it
    reads the lowest pending event numbers from the store, and ignores offers until it has
    caught up, so event-number order holds either way.

    Args:
        project: Project of the subscription.
        subscription_id: Its id.
        context: Shared parts.
    """

    def __init__(self, project: str, subscription_id: str, context: LaneContext) -> None:
        self.project = project
        self.subscription_id = subscription_id
        self._ctx = context
        self._queue: deque[Delivery] = deque()
        self._known: set[str] = set()
        self._reload = True
        self._reloading = False
        self._held: list[Delivery] = []
        self._wakes = 0
        self._wake = asyncio.Event()
        self._wake.set()
        self.closing = False
        self.task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        """Run the lane in the background."""
        self.task = asyncio.create_task(
            self._run(), name=f"delivery-lane:{self.project}/{self.subscription_id}"
        )
        return self.task

    def offer(self, deliveries: Sequence[Delivery]) -> None:
        """Newly accepted notifications (ascending event numbers)."""
        if self._reloading:
            self._held.extend(deliveries)
        elif not self._reload:
            if len(self._queue) + len(deliveries) > QUEUE_LIMIT:
                self._reload = True
            else:
                for delivery in deliveries:
                    if delivery.notification_id not in self._known:
                        self._known.add(delivery.notification_id)
                        self._queue.append(delivery)
        self._wake.set()

    def wake(self) -> None:
        """The store may hold pending rows this lane has not seen (restart, requeue)."""
        self._reload = True
        self._wakes += 1
        self._wake.set()

    @property
    def alive(self) -> bool:
        """Running and not about to end."""
        return self.task is not None and not self.task.done() and not self.closing

    async def _run(self) -> None:
        metrics.LANES.inc()
        try:
            await self._loop()
        except Exception:
            _log.exception("delivery lane failed", project=self.project, sub=self.subscription_id)
        finally:
            self.closing = True
            metrics.LANES.dec()

    async def _load(self) -> None:
        ctx = self._ctx
        self._reloading = True
        self._held = []
        wakes = self._wakes
        try:
            await ctx.marker.flush()
            rows = await ctx.store.pending(self.project, self.subscription_id, limit=PAGE)
        finally:
            self._reloading = False
        fresh = [r for r in rows if r.notification_id not in self._known]
        if len(rows) < PAGE and wakes == self._wakes:
            # Complete, and no requeue arrived while reading: back to in-memory offers.
            self._reload = False
            loaded = {r.notification_id for r in rows}
            fresh += [d for d in self._held if d.notification_id not in loaded]
        self._held = []
        for row in sorted(fresh, key=lambda r: r.event_number):
            if row.notification_id not in self._known:
                self._known.add(row.notification_id)
                self._queue.append(row)

    async def _loop(self) -> None:
        ctx = self._ctx
        while True:
            if not ctx.owns(self.project, self.subscription_id):
                return
            if not self._queue and self._reload:
                self._wake.clear()
                await self._load()
            if not self._queue:
                self._wake.clear()
                if self._reload:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)
                if not self._wake.is_set():
                    self.closing = True
                    return
                continue
            row = self._queue.popleft()
            try:
                await self._deliver(row)
            finally:
                self._known.discard(row.notification_id)

    async def _deliver(self, row: Delivery) -> None:
        ctx = self._ctx
        n = row.notification
        attempts = row.attempts
        while True:
            info = await ctx.registry.get(
                n.project, n.subscription_id, min_version=_version(n.subscription_version)
            )
            if info is None or info.status == "off":
                await ctx.marker.flush()
                why = "the subscription no longer exists" if info is None else "subscription is off"
                await ctx.store.mark_dead(n.notification_id, attempts, why)
                metrics.DEAD_LETTERS.inc()
                return
            wait = row.next_attempt_at - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            async with ctx.concurrency:
                try:
                    result = await ctx.sender.send(row, info)
                except Exception as exc:  # a channel bug must not kill the lane
                    _log.exception("channel raised", notification=row.notification_id)
                    result = AttemptResult(False, error=f"{type(exc).__name__}: {exc}")
            attempts += 1
            dead = not result.success and (
                not result.retryable or attempts >= info.policy.max_attempts
            )
            self._record(row, attempts, result, dead=dead)
            if info.policy.audit == "always" or (
                info.policy.audit == "on-failure" and not result.success
            ):
                await ctx.lifecycle.audit(n.project, attempt_audit_event(row, attempts, result))
            if result.success:
                ctx.marker.add(n.notification_id, attempts)
                ctx.delivered(n.project, n.subscription_id)
                if info.status == "error":
                    await self._transition(info, "active", f"event {row.event_number} delivered")
                return
            error = result.error or "failed"
            await ctx.marker.flush()  # the dead streak counts after earlier deliveries
            if dead:
                await self._dead(row, info, attempts, error)
                return
            next_at = time.time() + ctx.defaults.backoff.delay(attempts)
            await ctx.store.record_failure(n.notification_id, attempts, next_at, error)
            row = replace(row, attempts=attempts, next_attempt_at=next_at)

    def _record(self, row: Delivery, attempts: int, result: AttemptResult, *, dead: bool) -> None:
        channel = channel_name(row)
        outcome = "success" if result.success else "failure"
        if self._ctx.records is not None:
            decided: DeliveryOutcome = "success" if result.success else "dead" if dead else "retry"
            self._ctx.records.add(attempt_record(row, attempts, result, decided, channel))
        metrics.ATTEMPTS.labels(channel, outcome).inc()
        metrics.ATTEMPT_SECONDS.labels(channel).observe(result.seconds)
        _log.info(
            "delivery attempt",
            project=self.project,
            subscription=self.subscription_id,
            event_number=row.event_number,
            notification=row.notification_id,
            channel=channel,
            attempt=attempts,
            outcome=outcome,
            status=result.status,
            error=result.error,
            seconds=round(result.seconds, 4),
        )

    async def _dead(self, row: Delivery, info: SubscriptionInfo, attempts: int, error: str) -> None:
        ctx = self._ctx
        streak = await ctx.store.mark_dead(row.notification_id, attempts, error)
        metrics.DEAD_LETTERS.inc()
        _log.warning(
            "dead letter",
            project=self.project,
            subscription=self.subscription_id,
            event_number=row.event_number,
            attempts=attempts,
            error=error,
        )
        reason = f"event {row.event_number} failed after {attempts} attempts: {error}"
        if info.status in ("active", "requested"):
            info = await self._transition(info, "error", reason)
        limit = ctx.defaults.auto_disable_after
        if limit and streak >= limit:
            await self._transition(
                info, "off", f"{streak} notifications in a row failed; last: {reason}"
            )

    async def _transition(
        self, info: SubscriptionInfo, status: str, reason: str
    ) -> SubscriptionInfo:
        updated = await self._ctx.lifecycle.set_status(self.project, info, status, reason)
        if updated.status == status:
            metrics.TRANSITIONS.labels(status).inc()
        return updated
