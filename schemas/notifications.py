"""Notifications: one per (subscription, change event) that matched (topic
``fhir.notifications.v1``, keyed by subscription id).

A notification carries the facts decided once, at match time: which subscription, which
change, what matched and how to deliver it. The dispatcher only delivers; a retry never
re-matches. ``event_number`` is assigned by the dispatcher, durably, once per notification.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fhirbots.schemas.events import CausationLink, Interaction

__all__ = ["ChannelSpec", "ContentLevel", "Notification"]

ContentLevel = Literal["empty", "id-only", "full-resource"]


class ChannelSpec(BaseModel):
    """How to deliver, copied from the Subscription when the notification was made."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["rest-hook", "websocket", "message", "email"] = "rest-hook"
    endpoint: str | None = Field(
        default=None, description="URL, `Bot/<id>`, or a topic name for `message`."
    )
    payload: str | None = Field(default=None, description="MIME type of the payload, if any.")
    content: ContentLevel = "id-only"
    headers: tuple[str, ...] = Field(default=(), description="`Name: value` header lines.")
    heartbeat_period: int | None = Field(
        default=None, description="Seconds between heartbeats when idle (topic subscriptions)."
    )
    timeout: int | None = Field(
        default=None, description="Seconds a delivery may take before it counts as failed."
    )
    max_count: int | None = Field(
        default=None, description="Most events to bundle in one notification."
    )


class Notification(BaseModel):
    """A subscription matched a change event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    notification_id: str = Field(description="Unique id: hash of (subscription, event id).")
    project: str
    subscription_id: str
    subscription_version: str
    topic: str | None = Field(default=None, description="SubscriptionTopic canonical, if any.")
    event_id: str = Field(description="The change event that matched.")
    interaction: Interaction
    resource_type: str
    resource_id: str
    version_id: str
    resource: dict[str, Any] | None = Field(
        default=None, description="The version that matched (the previous one on delete)."
    )
    time: datetime = Field(description="When the change was committed.")
    matched: tuple[str, ...] = Field(
        default=(), description="The criteria that held, in words (for explain and audit)."
    )
    channel: ChannelSpec
    traceparent: str | None = None
    causation: tuple[CausationLink, ...] = ()

    @property
    def key(self) -> str:
        """Partition key: one subscription's notifications stay in order."""
        return f"{self.project}/{self.subscription_id}"
