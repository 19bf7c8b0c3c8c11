"""The matcher: a change event and a project's configuration -> notifications.

Pure: no I/O. For each candidate the index offers,
:func:`~fhirbots.subscriptions.evaluation.evaluate`
decides; a match becomes a :class:`~fhirbots.schemas.notifications.Notification` (id derived from
the subscription and the event, so a re-processed event yields the same id), unless the loop guard
withholds it (a :class:`~fhirbots.schemas.subscriptions.SuppressedNotification`). A subscription
that fails at run time is reported in ``failures`` and skipped; the others go on.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.notifications import Notification
from fhirbots.schemas.subscriptions import SuppressedNotification
from fhirbots.subscriptions.config import ProjectConfig
from fhirbots.subscriptions.evaluation import evaluate, subject_of
from fhirbots.subscriptions.loop_guard import LoopGuardPolicy
from fhirbots.subscriptions.model import SubscriptionSpec

__all__ = ["NOTIFICATION_NAMESPACE", "Failure", "MatchOutcome", "match_event", "notification_id"]

NOTIFICATION_NAMESPACE = uuid.UUID("6f1f8c5e-2b7d-5c43-9a61-3f0e4d2b8a17")
"""uuid5 namespace of notification ids (fixed forever: ids must be stable across releases)."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A subscription whose evaluation failed at run time."""

    subscription_id: str
    subscription_version: str
    message: str


@dataclass(frozen=True, slots=True)
class MatchOutcome:
    """What one event produced."""

    notifications: tuple[Notification, ...] = ()
    suppressed: tuple[SuppressedNotification, ...] = ()
    failures: tuple[Failure, ...] = ()


def notification_id(project: str, subscription_id: str, event_id: str) -> str:
    """The deterministic id of the notification of ``subscription_id`` for ``event_id``."""
    return str(uuid.uuid5(NOTIFICATION_NAMESPACE, f"{project}/{subscription_id}/{event_id}"))


def _notification(
    spec: SubscriptionSpec, event: ChangeEvent, matched: tuple[str, ...]
) -> Notification:
    return Notification(
        notification_id=notification_id(event.project, spec.id, event.event_id),
        project=event.project,
        subscription_id=spec.id,
        subscription_version=spec.version_id,
        topic=spec.topic_url,
        event_id=event.event_id,
        interaction=event.interaction,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        version_id=event.version_id,
        resource=subject_of(event),
        time=event.time,
        matched=matched,
        channel=spec.channel,
        traceparent=event.traceparent,
        causation=event.causation,
    )


def _suppressed(
    spec: SubscriptionSpec, bot: str, event: ChangeEvent, policy: LoopGuardPolicy
) -> SuppressedNotification:
    return SuppressedNotification(
        notification_id=notification_id(event.project, spec.id, event.event_id),
        project=event.project,
        subscription_id=spec.id,
        bot=bot,
        event_id=event.event_id,
        interaction=event.interaction,
        resource_type=event.resource_type,
        resource_id=event.resource_id,
        version_id=event.version_id,
        time=event.time,
        occurrences=policy.occurrences(bot, event.causation),
        max_depth=policy.max_depth,
        causation=event.causation,
    )


def match_event(
    config: ProjectConfig, event: ChangeEvent, policy: LoopGuardPolicy | None = None
) -> MatchOutcome:
    """Evaluate ``event`` against the project's active subscriptions.

    Args:
        config: The project's configuration (loaded for at least ``event.config_generation``).
        event: The change.
        policy: Loop guard policy (default depth 5).

    Returns:
        Notifications, suppressed notifications and run-time failures, in subscription order.
    """
    guard = policy or LoopGuardPolicy()
    notifications: list[Notification] = []
    suppressed: list[SuppressedNotification] = []
    failures: list[Failure] = []
    for spec in config.index.candidates(event):
        try:
            verdict = evaluate(spec, event, config.topics)
        except Exception as exc:  # a bug in one criterion must not stop the others
            failures.append(Failure(spec.id, spec.version_id, f"{type(exc).__name__}: {exc}"))
            continue
        if verdict.error is not None:
            failures.append(Failure(spec.id, spec.version_id, verdict.error))
            continue
        if not verdict.fires:
            continue
        bot = spec.bot
        if bot is not None and event.causation and not guard.allows(bot, event.causation):
            suppressed.append(_suppressed(spec, bot, event, guard))
            continue
        notifications.append(_notification(spec, event, verdict.matched))
    return MatchOutcome(tuple(notifications), tuple(suppressed), tuple(failures))
