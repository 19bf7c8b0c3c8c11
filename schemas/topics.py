"""Topic names. Each carries a version suffix; bump it when its payload changes incompatibly."""

from __future__ import annotations

__all__ = [
    "BOT_EXECUTIONS",
    "CHANGES",
    "DEADLETTER_SUFFIX",
    "DELIVERIES",
    "NOTIFICATIONS",
    "SUPPRESSED",
    "deadletter_topic",
]

CHANGES = "fhir.changes.v1"
"""Every committed create, update and delete (payload:
:class:`fhirbots.schemas.events.ChangeEvent`)."""

NOTIFICATIONS = "fhir.notifications.v1"
"""One message per (subscription, change event) that matched, keyed by subscription id."""

SUPPRESSED = "fhir.suppressed.v1"
"""Notifications the loop guard withheld, with the causation chain (payload:
:class:`fhirbots.schemas.subscriptions.SuppressedNotification`), keyed by subscription."""

BOT_EXECUTIONS = "bots.executions.v1"
"""One record per bot execution, whatever triggered it (payload:
:class:`fhirbots.schemas.executions.BotExecutionRecord`), keyed by ``project/Bot/<id>``."""

DELIVERIES = "fhir.deliveries.v1"
"""One record per attempt to deliver a notification, however it went (payload:
:class:`fhirbots.schemas.deliveries.DeliveryAttemptRecord`), keyed by ``project/subscription``."""

DEADLETTER_SUFFIX = ".deadletter"
"""A message that cannot be decoded or handled goes to its topic's dead-letter twin."""


def deadletter_topic(topic: str) -> str:
    """Name of the dead-letter twin of ``topic``."""
    return topic + DEADLETTER_SUFFIX
