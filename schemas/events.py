"""Frozen pydantic models of the events that travel on the engine's topics.

Every topic payload is one of these models serialised as JSON. Topic names carry a version
suffix (see :mod:`fhirbots.schemas.topics`); a breaking change to a model gets a new topic version.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CONFIG_TYPES", "CausationLink", "ChangeEvent", "Interaction"]

Interaction = Literal["create", "update", "delete"]

CONFIG_TYPES = frozenset(
    {"Subscription", "SubscriptionTopic", "Bot", "SearchParameter", "ValueSet", "CodeSystem"}
)
"""Resource types that configure the engine; writing one bumps the project's generation (the
last three change how subscription criteria are parsed)."""


class CausationLink(BaseModel):
    """One bot execution in the chain of causes that led to a change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bot: str = Field(description="Reference of the bot that wrote the change, `Bot/<id>`.")
    execution: str = Field(description="Id of the bot execution that wrote the change.")


class ChangeEvent(BaseModel):
    """A committed create, update or delete of one resource (topic `fhir.changes.v1`).

    Written to the outbox in the same database transaction as the resource itself, so the
    event exists if and only if the change was committed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(description="Unique id of this event (UUID).")
    project: str = Field(description="Id of the project the resource belongs to.")
    interaction: Interaction
    resource_type: str
    resource_id: str
    version_id: str = Field(
        description="versionId of the new version (of the tombstone on delete)."
    )
    resource: dict[str, Any] | None = Field(
        default=None, description="The new version; none on delete."
    )
    previous: dict[str, Any] | None = Field(
        default=None, description="The version before this change; none on create."
    )
    time: datetime = Field(description="Commit time (the new version's meta.lastUpdated).")
    author: str | None = Field(default=None, description="Who made the change, e.g. `ApiKey/<id>`.")
    traceparent: str | None = Field(default=None, description="W3C traceparent of the request.")
    causation: tuple[CausationLink, ...] = Field(
        default=(), description="Bot executions that led to this change, oldest first."
    )
    config_generation: int = Field(
        default=0,
        description="The project's configuration generation when the change was committed. It "
        "grows with every write of a Subscription, SubscriptionTopic or Bot, in the same "
        "transaction, so a matcher that sees a larger number than it has loaded reloads that "
        "project's configuration before matching: changes take effect for the very next event.",
    )

    @property
    def key(self) -> str:
        """Partition key: all events of one resource go to one partition, in version order."""
        return f"{self.project}/{self.resource_type}/{self.resource_id}"
