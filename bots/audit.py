"""AuditEvent resources recording bot executions (``Bot.auditEventTrigger`` decides when).

>>> if result.needs_audit(bot.audit_event_trigger):
...     await store.create(audit_event(request, result))
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fhirbots.bots.executor import ExecutionRequest, ExecutionResult

__all__ = ["MAX_AUDIT_TEXT", "audit_event"]

MAX_AUDIT_TEXT = 10_000
"""Characters of error and log text kept in ``outcomeDesc``; the full logs can be far longer
and an audit trail is not a log store."""

_OUTCOMES = {"success": "0", "error": "4", "timeout": "8", "killed": "8", "memory": "8"}
"""AuditEvent.outcome: 0 success, 4 minor failure (the bot's own error), 8 serious failure
(the sandbox had to stop it)."""


def _input_reference(value: Any) -> str | None:
    if isinstance(value, dict) and value.get("resourceType") and value.get("id"):
        return f"{value['resourceType']}/{value['id']}"
    return None


def audit_event(
    request: ExecutionRequest, result: ExecutionResult, *, recorded: datetime | None = None
) -> dict[str, Any]:
    """An R4 ``AuditEvent`` describing one execution.

    Args:
        request: what was executed.
        result: how it ended.
        recorded: when the execution ended; defaults to now (UTC).
    """
    end = recorded or datetime.now(UTC)
    start = end - timedelta(milliseconds=result.duration_ms)
    description = f"{result.status}"
    if result.error:
        description += f"\n{result.error}"
    if result.logs:
        description += f"\n--- logs ---\n{result.logs}"
    bot = request.bot.reference
    agents: list[dict[str, Any]] = [
        {
            "type": {"text": "bot"},
            "who": {"reference": bot, "display": request.bot.name},
            "requestor": False,
        }
    ]
    if request.requester:
        agents.append({"who": {"reference": request.requester}, "requestor": True})
    entities: list[dict[str, Any]] = [{"what": {"reference": bot}, "name": request.execution_id}]
    subject = _input_reference(request.input)
    if subject:
        entities.append({"what": {"reference": subject}})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110100",
            "display": "Application Activity",
        },
        "subtype": [{"system": "urn:fhirbots:audit", "code": "bot-execution"}],
        "action": "E",
        "period": {
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": end.isoformat().replace("+00:00", "Z"),
        },
        "recorded": end.isoformat().replace("+00:00", "Z"),
        "outcome": _OUTCOMES[result.status],
        "outcomeDesc": description[:MAX_AUDIT_TEXT],
        "agent": agents,
        "source": {"site": request.project, "observer": {"reference": bot}},
        "entity": entities,
    }
    if request.trace_id:
        event["entity"].append(
            {"what": {"identifier": {"value": request.trace_id}}, "name": "traceparent"}
        )
    return event
