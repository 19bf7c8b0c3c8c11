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
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from engine.delivery import metrics
from engine.delivery.attempt import AttemptResult
from engine.delivery.lifecycle import Lifecycle, attempt_audit_event
from engine.delivery.policy import DeliveryDefaults
from engine.delivery.sender import Sender, channel_name
from engine.delivery.store import Delivery, DeliveryStore
from engine.delivery.subscriptions import SubscriptionInfo, SubscriptionRegistry

__all__ = ["IDLE_SECONDS", "PAGE", "Lane", "LaneContext"]

PAGE = 100
"""Pending notifications read from the store at once."""

IDLE_SECONDS = 30.0
"""A lane with nothing to do ends after this long (the next notification starts a new one)."""

_log = structlog.get_logger("engine.delivery")


@dataclass(frozen=True)
class LaneContext:
    """What every lane shares."""

    store: DeliveryStore
    registry: SubscriptionRegistry
    lifecycle: Lifecycle
    sender: Sender
    defaults: DeliveryDefaults
    concurrency: asyncio.Semaphore
    owns: Callable[[str, str], bool]
    """Whether this dispatcher currently owns the subscription (its partition)."""
    delivered: Callable[[str, str], None]
    """Called after each delivery (heartbeats count from the last notification)."""


def _version(text: str) -> int:
    return int(text) if text.isdigit() else 0


class Lane:
    """The delivery task of one subscription.

    Args:
        project: Project of the subscription.
        subscription_id: Its id.
        context: Shared parts.
    """

    def __init__(self, project: str, subscription_id: str, context: LaneContext) -> None:
        self.project = project
        self.subscription_id = subscription_id
        self._ctx = context
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

    def wake(self) -> None:
        """There may be new pending notifications."""
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

    async def _loop(self) -> None:
        ctx = self._ctx
        while True:
            self._wake.clear()
            if not ctx.owns(self.project, self.subscription_id):
                return
            rows = await ctx.store.pending(self.project, self.subscription_id, limit=PAGE)
            if not rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)
                if not self._wake.is_set():
                    self.closing = True
                    return
                continue
            for row in rows:
                if not ctx.owns(self.project, self.subscription_id):
                    return
                await self._deliver(row)

    async def _deliver(self, row: Delivery) -> None:
        ctx = self._ctx
        n = row.notification
        attempts = row.attempts
        while True:
            info = await ctx.registry.get(
                n.project, n.subscription_id, min_version=_version(n.subscription_version)
            )
            if info is None or info.status == "off":
                why = "the subscription no longer exists" if info is None else "subscription is off"
                await ctx.store.mark_dead(n.notification_id, attempts, why)
                metrics.DEAD_LETTERS.inc()
                return
            wait = row.next_attempt_at - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            async with ctx.concurrency:
                result = await ctx.sender.send(row, info)
            attempts += 1
            self._record(row, attempts, result)
            if info.policy.audit == "always" or (
                info.policy.audit == "on-failure" and not result.success
            ):
                await ctx.lifecycle.audit(n.project, attempt_audit_event(row, attempts, result))
            if result.success:
                await ctx.store.mark_delivered(n.notification_id, attempts)
                ctx.delivered(n.project, n.subscription_id)
                if info.status == "error":
                    await self._transition(info, "active", f"event {row.event_number} delivered")
                return
            error = result.error or "failed"
            if not result.retryable or attempts >= info.policy.max_attempts:
                await self._dead(row, info, attempts, error)
                return
            next_at = time.time() + ctx.defaults.backoff.delay(attempts)
            await ctx.store.record_failure(n.notification_id, attempts, next_at, error)
            row = replace(row, attempts=attempts, next_attempt_at=next_at)

    def _record(self, row: Delivery, attempts: int, result: AttemptResult) -> None:
        channel = channel_name(row)
        outcome = "success" if result.success else "failure"
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
