"""The record of one delivery attempt (topic ``fhir.deliveries.v1``).

The dispatcher publishes one record per attempt to deliver a notification, whatever its channel
and however it went, so that the dashboard's statistics, live tail and trace view follow
deliveries without reading the delivery store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RESPONSE_EXCERPT_CHARS", "DeliveryAttemptRecord", "DeliveryChannel", "DeliveryOutcome"]

DeliveryOutcome = Literal["success", "retry", "dead"]
"""How an attempt ended: delivered; failed and will be tried again; failed for good (the
notification is now a dead letter)."""

DeliveryChannel = Literal["rest-hook", "websocket", "message", "email", "bot"]
"""The channel an attempt used (``bot`` for a ``Bot/<id>`` endpoint)."""

RESPONSE_EXCERPT_CHARS = 512
"""Characters of an endpoint's response kept in a record: enough to see an error message,
small enough that a record stays a few hundred bytes."""


class DeliveryAttemptRecord(BaseModel):
    """How one attempt to deliver a notification went."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempt_id: str = Field(description="Unique id of the attempt.")
    project: str
    subscription_id: str
    notification_id: str
    event_id: str = Field(description="The change event the notification is about.")
    event_number: int | None = Field(
        default=None, description="The subscription's event number of the notification."
    )
    channel: DeliveryChannel
    endpoint: str | None = None
    attempt: int = Field(description="1 for the first attempt of this notification.")
    outcome: DeliveryOutcome
    status: int | None = Field(default=None, description="HTTP status, if a response came.")
    error: str | None = None
    response_excerpt: str | None = Field(
        default=None, max_length=RESPONSE_EXCERPT_CHARS, description="Start of the response."
    )
    started: datetime
    duration_ms: float
    trace_id: str | None = Field(default=None, description="W3C trace id of the change.")

    @property
    def key(self) -> str:
        """Partition key: one subscription's attempts stay in order."""
        return f"{self.project}/{self.subscription_id}"
