"""AuditEvents of bot executions."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir.resources.R4B.auditevent import AuditEvent

from fhirbots.bots.audit import MAX_AUDIT_TEXT, audit_event
from fhirbots.bots.executor import ExecutionRequest, ExecutionResult, ExecutionStatus
from fhirbots.bots.testing import make_bot

BOT = make_bot("def handler(fhir, event):\n    pass\n", id="b1", name="Flagger")


def test_success_event_is_valid_and_references_bot_input_and_requester() -> None:
    request = ExecutionRequest(
        bot=BOT,
        input={"resourceType": "Observation", "id": "o1"},
        project="proj",
        requester="Practitioner/7",
        trace_id="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    result = ExecutionResult(
        status="success", execution_id=request.execution_id, logs="hello\n", duration_ms=12.5
    )
    event = audit_event(request, result, recorded=datetime(2024, 5, 1, 12, 0, tzinfo=UTC))
    AuditEvent.model_validate(event)
    assert event["outcome"] == "0"
    assert event["period"] == {
        "start": "2024-05-01T11:59:59.987500Z",
        "end": "2024-05-01T12:00:00Z",
    }
    assert [a["who"]["reference"] for a in event["agent"]] == ["Bot/b1", "Practitioner/7"]
    references = [e["what"].get("reference") for e in event["entity"]]
    assert references[:2] == ["Bot/b1", "Observation/o1"]
    assert event["entity"][0]["name"] == request.execution_id
    assert event["source"]["site"] == "proj"
    assert "hello" in event["outcomeDesc"]


def test_failures_are_graded_and_text_is_capped() -> None:
    request = ExecutionRequest(bot=BOT, input="raw text")
    graded: list[tuple[ExecutionStatus, str]] = [
        ("error", "4"),
        ("timeout", "8"),
        ("memory", "8"),
        ("killed", "8"),
    ]
    for status, outcome in graded:
        result = ExecutionResult(
            status=status, execution_id="e", error="boom", logs="x" * (2 * MAX_AUDIT_TEXT)
        )
        event = audit_event(request, result)
        AuditEvent.model_validate(event)
        assert event["outcome"] == outcome
        assert event["outcomeDesc"].startswith(f"{status}\nboom")
        assert len(event["outcomeDesc"]) == MAX_AUDIT_TEXT
        assert len(event["entity"]) == 1
