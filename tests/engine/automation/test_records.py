"""Execution records: what the Bot's executionRecording keeps, and the input they carry."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbots.bots.executor import ExecutionRequest, ExecutionResult, ExecutionStatus
from fhirbots.engine.automation.records import MAX_RECORD_INPUT, build_record
from fhirbots.schemas.bot import Bot


def request(recording: str, payload: Any = None) -> ExecutionRequest:
    bot = Bot.from_resource(
        {
            "resourceType": "Bot",
            "id": "b1",
            "name": "b",
            "code": "x",
            "executionRecording": recording,
        }
    )
    return ExecutionRequest(bot=bot, input=payload or {"resourceType": "Patient"}, project="p1")


def result(status: ExecutionStatus) -> ExecutionResult:
    return ExecutionResult(
        status=status,
        execution_id="x1",
        output={"ok": 1},
        logs="hello",
        duration_ms=3.0,
    )


@pytest.mark.parametrize(
    ("recording", "status", "kept"),
    [
        ("all", "success", True),
        ("errors", "success", False),
        ("errors", "error", True),
        ("none", "error", False),
    ],
)
def test_only_kept_runs_carry_input_output_and_logs(
    recording: str, status: ExecutionStatus, kept: bool
) -> None:
    record = build_record(
        request(recording),
        result(status),
        trigger="subscription",
        bot_version="2",
        notification_id="n1",
    )
    assert record.kept is kept
    assert record.notification_id == "n1" and record.status == status
    if kept:
        assert (record.input, record.output, record.logs) == (
            {"resourceType": "Patient"},
            {"ok": 1},
            "hello",
        )
    else:
        assert (record.input, record.output, record.logs) == (None, None, "")


def test_a_large_input_is_noted_not_kept() -> None:
    large = {"resourceType": "Binary", "data": "x" * (MAX_RECORD_INPUT + 1)}
    record = build_record(
        request("all", large), result("success"), trigger="execute", bot_version=None
    )
    assert record.input["bytes"] > MAX_RECORD_INPUT
    assert "not kept" in record.input["fhirbotsNote"]
