"""AuditEvents of actions taken from the dashboard, each naming the key that took it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fhirbots.engine.dashboard.times import instant
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.storage.model import WriteContext
from fhirbots.engine.web.auth import Principal

__all__ = ["DASHBOARD_AUDIT_SYSTEM", "Action", "audit_action"]

DASHBOARD_AUDIT_SYSTEM = "https://fhirbots.dev/CodeSystem/dashboard-action"
"""Code system of AuditEvent.subtype for dashboard actions (``sign-in``, ``retry``, ...)."""

_REST_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}

Action = Literal["C", "R", "U", "D", "E"]
"""AuditEvent.action: create, read, update, delete, execute."""


async def audit_action(
    fhir: FhirService,
    principal: Principal,
    subtype: str,
    description: str,
    *,
    action: Action = "E",
    entity: str | None = None,
    success: bool = True,
) -> None:
    """Record that ``principal`` did ``subtype`` from the dashboard (in its project)."""
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": _REST_TYPE,
        "subtype": [{"system": DASHBOARD_AUDIT_SYSTEM, "code": subtype}],
        "action": action,
        "recorded": instant(datetime.now(UTC)),
        "outcome": "0" if success else "4",
        "outcomeDesc": description[:1000],
        "agent": [
            {"who": {"reference": principal.author, "display": "API key"}, "requestor": True}
        ],
        "source": {"observer": {"display": "fhirbots dashboard"}},
    }
    if entity is not None:
        event["entity"] = [{"what": {"reference": entity}}]
    await fhir.create(principal.project, event, WriteContext(author=principal.author))
