"""Subscription status transitions and AuditEvents of delivery.

Transitions the dispatcher makes, each written to the Subscription (``status`` and R4's
``error`` element) and recorded in an AuditEvent:

* ``requested`` -> ``active`` after a successful handshake, -> ``error`` after a failed one;
* ``active`` -> ``error`` when a notification becomes a dead letter;
* ``error`` -> ``active`` when a later notification is delivered;
* any -> ``off`` after too many consecutive dead letters (auto-disable).

Per-attempt AuditEvents are written when the Subscription's audit mode asks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog

from fhirbots.engine.delivery.attempt import AttemptResult
from fhirbots.engine.delivery.store import Delivery
from fhirbots.engine.delivery.subscriptions import SubscriptionInfo, SubscriptionRegistry
from fhirbots.engine.errors import FhirError
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.storage.model import CreateOp, UpdateOp, WriteContext
from fhirbots.subscriptions.model import CRITERIA_ERROR_URL

__all__ = ["AUTHOR", "Lifecycle", "attempt_audit_event", "transition_audit_event"]

AUTHOR = "Engine/dispatcher"
"""Author of the writes the dispatcher makes (shows in change events and history)."""

LIFECYCLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
"""Code system of AuditEvent.type: ``transmit`` for attempts, ``amend`` for transitions."""

OUTCOME_SUCCESS = "0"
OUTCOME_MINOR = "4"
OUTCOME_SERIOUS = "8"

_log = structlog.get_logger("fhirbots.engine.delivery")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _base(code: str, outcome: str, description: str, subscription_id: str) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {"system": LIFECYCLE_SYSTEM, "code": code},
        "recorded": _now(),
        "outcome": outcome,
        "outcomeDesc": description[:1000],
        "agent": [{"who": {"display": "fhirbots dispatcher"}, "requestor": False}],
        "source": {"observer": {"display": "fhirbots dispatcher"}},
        "entity": [{"what": {"reference": f"Subscription/{subscription_id}"}}],
    }


def attempt_audit_event(delivery: Delivery, attempt: int, result: AttemptResult) -> dict[str, Any]:
    """The AuditEvent of one delivery attempt."""
    n = delivery.notification
    description = "delivered" if result.success else (result.error or "failed")
    event = _base(
        "transmit",
        OUTCOME_SUCCESS if result.success else OUTCOME_MINOR,
        description,
        n.subscription_id,
    )
    event["entity"][0]["detail"] = [
        {"type": "eventNumber", "valueString": str(delivery.event_number)},
        {"type": "attempt", "valueString": str(attempt)},
        {"type": "status", "valueString": str(result.status or "")},
    ]
    event["entity"].append(
        {"what": {"reference": f"{n.resource_type}/{n.resource_id}/_history/{n.version_id}"}}
    )
    return event


def transition_audit_event(
    subscription_id: str, before: str, after: str, reason: str
) -> dict[str, Any]:
    """The AuditEvent of a status change."""
    outcome = OUTCOME_SUCCESS if after == "active" else OUTCOME_SERIOUS
    event = _base("amend", outcome, f"status {before} -> {after}: {reason}", subscription_id)
    event["entity"][0]["detail"] = [
        {"type": "from", "valueString": before},
        {"type": "to", "valueString": after},
    ]
    return event


class Lifecycle:
    """Writes status changes and AuditEvents through the FHIR service.

    Args:
        fhir: The FHIR service (validation, versions, change events).
        registry: The Subscription cache, updated with what is written here.
    """

    def __init__(self, fhir: FhirService, registry: SubscriptionRegistry) -> None:
        self._fhir = fhir
        self._registry = registry
        self._context = WriteContext(author=AUTHOR)

    async def audit(self, project: str, event: dict[str, Any]) -> None:
        """Store an AuditEvent (a failure is logged, never raised: auditing must not stop
        delivery)."""
        try:
            await self._fhir.create(project, event, self._context)
        except FhirError as exc:
            _log.warning("audit event not stored", project=project, error=str(exc))

    async def set_status(
        self, project: str, info: SubscriptionInfo, status: str, reason: str
    ) -> SubscriptionInfo:
        """Move the Subscription to ``status`` (with ``error`` set unless active), audited.

        A concurrent edit of the Subscription wins over nothing: the write is retried once
        on the version just read.
        """
        before = info.status
        if before == status:
            return info
        subscription_id = str(info.resource["id"])
        current = info
        for _ in range(2):
            resource = dict(current.resource)
            resource["status"] = status
            # A status set here is about delivery, not about the criteria failing.
            extensions = [
                e for e in resource.get("extension", []) if e.get("url") != CRITERIA_ERROR_URL
            ]
            if extensions:
                resource["extension"] = extensions
            else:
                resource.pop("extension", None)
            if status == "active":
                resource.pop("error", None)
            else:
                resource["error"] = reason[:1000]
            resource.pop("meta", None)
            # The new status and its AuditEvent commit together: whoever sees one sees both.
            audit = transition_audit_event(subscription_id, before, status, reason)
            try:
                ops = await self._fhir.prepare_many(
                    project,
                    [
                        UpdateOp("Subscription", subscription_id, resource, current.version),
                        CreateOp(audit),
                    ],
                )
                result, _ = await self._fhir.write(project, ops, self._context)
            except FhirError as exc:
                self._registry.forget(project, subscription_id)
                fresh = await self._registry.get(project, subscription_id)
                if fresh is None:
                    return current
                if exc.status != 412:
                    _log.warning(
                        "subscription status not written",
                        project=project,
                        subscription=subscription_id,
                        error=str(exc),
                    )
                    return fresh
                current = fresh
                continue
            stored = result.stored
            if stored is None or stored.content is None:
                return current
            updated = SubscriptionInfo(stored.content, stored.version_id, current.policy)
            self._registry.remember(project, updated)
            _log.info(
                "subscription status",
                project=project,
                subscription=subscription_id,
                before=before,
                after=status,
                reason=reason,
            )
            return updated
        return current
