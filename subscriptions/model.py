"""Parsed subscriptions and topics: what the matcher evaluates, decided once per version.

:mod:`fhirbots.subscriptions.definitions` turns Subscription and SubscriptionTopic resources into
these frozen objects; the index and the matcher never look at the resources again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from fhirbots.schemas.events import Interaction
from fhirbots.schemas.notifications import ChannelSpec
from fhirbots.subscriptions.search import SearchQuery

__all__ = [
    "ALL_INTERACTIONS",
    "DEFAULT_INTERACTIONS",
    "Criterion",
    "SubscriptionSpec",
    "SubscriptionStatus",
    "Topic",
    "TopicTrigger",
]

SubscriptionStatus = Literal["requested", "active", "error", "off"]

CRITERIA_ERROR_URL = "https://fhirbots.dev/fhir/StructureDefinition/subscription-criteria-error"
"""Extension (valueBoolean) the matcher puts on a Subscription whose criteria failed at run
time. Without it, ``error`` means delivery is failing: the subscription keeps firing, so the
dispatcher notices recovery (back to ``active``) or counts failures up to auto-disable."""

ALL_INTERACTIONS: frozenset[Interaction] = frozenset({"create", "update", "delete"})
DEFAULT_INTERACTIONS: frozenset[Interaction] = frozenset({"create", "update"})
"""Interactions a criteria subscription fires on unless it asks for others (as Medplum)."""


@dataclass(frozen=True, slots=True)
class Criterion:
    """A search string evaluated in memory on one resource.

    Attributes:
        text: The string as written (for explanations).
        query: The parsed query.
        expression: Where it was written (``Subscription.criteria`` ...).
        warnings: What was accepted but ignored (``_sort`` and other result parameters).
    """

    text: str
    query: SearchQuery
    expression: str
    warnings: tuple[str, ...] = ()

    @property
    def resource_type(self) -> str:
        """The type the query searches."""
        return self.query.resource_type or "Resource"


@dataclass(frozen=True, slots=True)
class TopicTrigger:
    """One ``SubscriptionTopic.resourceTrigger``.

    Attributes:
        index: Its position in the topic (for explanations).
        resource_type: The resource type it watches.
        interactions: The interactions it fires on.
        previous: ``queryCriteria.previous``: test on the version before the change.
        current: ``queryCriteria.current``: test on the new version.
        result_for_create: The ``previous`` result on create (no previous version).
        result_for_delete: The ``current`` result on delete (no new version).
        require_both: Both tests must pass (otherwise either of those present).
        fhirpath: ``fhirPathCriteria`` with ``%previous``/``%current``.
    """

    index: int
    resource_type: str
    interactions: frozenset[Interaction]
    previous: Criterion | None = None
    current: Criterion | None = None
    result_for_create: bool = False
    result_for_delete: bool = False
    require_both: bool = False
    fhirpath: str | None = None


@dataclass(frozen=True, slots=True)
class Topic:
    """A SubscriptionTopic.

    Attributes:
        id: Resource id.
        url: Canonical URL (what subscriptions name).
        status: Publication status; ``retired`` topics never fire.
        triggers: Resource triggers.
        can_filter_by: Allowed filter parameters: resource type (``""`` for any) to the
            parameter codes and, per code, the allowed modifiers (empty: any supported).
    """

    id: str
    url: str
    status: str
    triggers: tuple[TopicTrigger, ...]
    can_filter_by: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)

    @property
    def resource_types(self) -> frozenset[str]:
        """Types any trigger watches."""
        return frozenset(t.resource_type for t in self.triggers)


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A Subscription as the matcher sees it.

    Attributes:
        id: Resource id.
        version_id: The version parsed.
        status: ``requested``, ``active``, ``error`` or ``off``; only ``active`` fires.
        criteria: The R4 criteria search (None for topic subscriptions).
        fhirpath: FHIRPath criterion with ``%previous``/``%current`` (Medplum extension).
        interactions: Interactions a criteria subscription fires on.
        topic_url: Canonical of the SubscriptionTopic (topic subscriptions).
        filters: ``backport-filter-criteria``: a search per resource type, ANDed.
        channel: How to deliver.
        end: When the subscription stops firing, if set.
        error: The error recorded on the resource, if any.
        since: When this version was written (``meta.lastUpdated``): changes committed before
            it do not fire it, even when a matcher that is catching up sees them afterwards.
        criteria_failed: The ``error`` status was set because the criteria failed at run time
            (:data:`CRITERIA_ERROR_URL`); such a subscription stays silent until fixed.
    """

    id: str
    version_id: str
    status: SubscriptionStatus
    channel: ChannelSpec
    criteria: Criterion | None = None
    fhirpath: str | None = None
    interactions: frozenset[Interaction] = DEFAULT_INTERACTIONS
    topic_url: str | None = None
    filters: tuple[Criterion, ...] = ()
    end: datetime | None = None
    error: str | None = None
    since: datetime | None = None
    criteria_failed: bool = False

    @property
    def warnings(self) -> tuple[str, ...]:
        """What its criteria and filters carry that is accepted but ignored."""
        criteria = (self.criteria,) if self.criteria is not None else ()
        return tuple(w for c in (*criteria, *self.filters) for w in c.warnings)

    @property
    def fires(self) -> bool:
        """Whether the status lets it fire: ``active``, or ``error`` from delivery (not from
        its own criteria failing)."""
        return self.status == "active" or (self.status == "error" and not self.criteria_failed)

    @property
    def reference(self) -> str:
        """``Subscription/<id>``."""
        return f"Subscription/{self.id}"

    @property
    def bot(self) -> str | None:
        """``Bot/<id>`` when the channel starts a bot, else None."""
        endpoint = self.channel.endpoint or ""
        return endpoint if endpoint.startswith("Bot/") else None
