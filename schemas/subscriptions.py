"""Records of the subscription matcher other than notifications.

A :class:`SuppressedNotification` is what the loop guard writes (topic ``fhir.suppressed.v1``)
instead of a notification that would start a bot already too often in the causation chain.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from fhirbots.schemas.events import CausationLink, Interaction

__all__ = ["SuppressedNotification"]


class SuppressedNotification(BaseModel):
    """A notification the loop guard did not produce."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    notification_id: str = Field(description="The id the notification would have had.")
    project: str
    subscription_id: str
    bot: str = Field(description="The bot it would have triggered, `Bot/<id>`.")
    event_id: str
    interaction: Interaction
    resource_type: str
    resource_id: str
    version_id: str
    time: datetime = Field(description="When the change was committed.")
    occurrences: int = Field(description="How often the bot is already in the chain.")
    max_depth: int = Field(description="The configured depth it exceeded.")
    causation: tuple[CausationLink, ...] = Field(description="The chain, oldest first.")

    @property
    def key(self) -> str:
        """Partition key: the subscription, like its notifications."""
        return f"{self.project}/{self.subscription_id}"
