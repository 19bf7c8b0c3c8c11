"""Records of executions: a message on ``bots.executions.v1`` and, per the Bot's
``auditEventTrigger``, an ``AuditEvent`` in the bot's project.

Recording never fails an execution: the bot already ran (and may have written), so a broken
event log or a refused AuditEvent is logged and counted, and the engine goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from prometheus_client import Counter

from fhirbots.bots.audit import audit_event
from fhirbots.bots.executor import ExecutionRequest, ExecutionResult
from fhirbots.engine.errors import FhirError
from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.eventlog.port import EventLog, Retention
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.storage.model import WriteContext
from fhirbots.schemas.executions import BotExecutionRecord, ExecutionTrigger
from fhirbots.schemas.topics import BOT_EXECUTIONS

__all__ = ["RECORD_FAILURES", "ExecutionRecorder", "build_record"]

MAX_RECORD_TEXT = 64 * 1024
"""Characters of logs and error kept in a record: the executor already caps logs at the
policy's ``max_log_bytes`` (64 KiB by default); this bounds a message whatever the policy."""

MAX_RECORD_INPUT = 256 * 1024
"""Bytes of input (as JSON) a record keeps: a large Synthea resource fits, a bulk Bundle does
not (the dashboard then says how large it was)."""

RECORD_RETENTION = Retention(age=timedelta(days=30))
"""Execution records are kept a month: long enough for the dashboard and an investigation."""

RECORD_FAILURES = Counter(
    "fhirbots_bot_record_failures_total",
    "Execution records or AuditEvents that could not be written",
    ["what"],
)

_log = structlog.get_logger(__name__)

EventLogSource = Callable[[], EventLog | None]
"""The event log of the process, when it has one open (looked up at each record)."""


def _recorded_input(value: Any) -> Any:
    """The input as a record keeps it: itself, or a note of its size when it is too large."""
    size = len(orjson.dumps(value, default=str))
    if size <= MAX_RECORD_INPUT:
        return value
    return {"fhirbotsNote": "input not kept: larger than the record limit", "bytes": size}


def build_record(
    request: ExecutionRequest,
    result: ExecutionResult,
    *,
    trigger: ExecutionTrigger,
    bot_version: str | None,
    ended: datetime | None = None,
    notification_id: str | None = None,
) -> BotExecutionRecord:
    """The record of one execution; what the Bot's ``executionRecording`` does not keep (the
    input, output and logs of a run that is only counted) is left out."""
    end = ended or datetime.now(UTC)
    record = BotExecutionRecord(
        execution_id=result.execution_id,
        project=request.project,
        bot=request.bot.reference,
        bot_version=bot_version,
        trigger=trigger,
        status=result.status,
        started=end - timedelta(milliseconds=result.duration_ms),
        duration_ms=result.duration_ms,
        logs=result.logs[:MAX_RECORD_TEXT],
        output=result.output,
        error=result.error[:MAX_RECORD_TEXT] if result.error else None,
        fhir_calls=result.fhir_calls,
        trace_id=request.trace_id,
        requester=request.requester,
        idempotency_key=request.idempotency_key,
        causation=request.causation,
        notification_id=notification_id,
        input=_recorded_input(request.input),
        recording=request.bot.execution_recording,
    )
    if record.kept:
        return record
    return record.model_copy(update={"input": None, "output": None, "logs": ""})


class ExecutionRecorder:
    """Publishes execution records and writes AuditEvents.

    Args:
        fhir: The engine's FHIR service (AuditEvents are written through it).
        event_log: Returns the process's event log, or None when it has none (a process
            without one still writes AuditEvents).
    """

    def __init__(self, fhir: FhirService, event_log: EventLogSource) -> None:
        self._fhir = fhir
        self._event_log = event_log
        self._topic_ready: EventLog | None = None

    async def record(self, request: ExecutionRequest, record: BotExecutionRecord) -> None:
        """Publish ``record``; an event log that fails is logged and counted, not raised."""
        log = self._event_log()
        if log is None:
            return
        try:
            if self._topic_ready is not log:
                await log.create_topic(BOT_EXECUTIONS, retention=RECORD_RETENTION)
                self._topic_ready = log
            await log.publish(BOT_EXECUTIONS, record.key, record.model_dump_json().encode())
        except EventLogError as exc:  # each adapter translates its driver's errors into these
            RECORD_FAILURES.labels("record").inc()
            _log.error(
                "bot execution record not published",
                bot=request.bot.reference,
                execution=record.execution_id,
                error=str(exc),
            )

    async def audit(self, request: ExecutionRequest, result: ExecutionResult) -> str | None:
        """Write the AuditEvent if the bot's trigger asks for one; returns its id or None.

        The AuditEvent carries the execution's causation chain, so a Subscription on
        AuditEvent whose endpoint is the same bot is stopped by the loop guard.
        """
        if not result.needs_audit(request.bot.audit_event_trigger):
            return None
        context = WriteContext(
            author=request.bot.reference,
            traceparent=request.trace_id,
            causation=request.call_context().causation,
        )
        try:
            written = await self._fhir.create(
                request.project, audit_event(request, result), context
            )
        except FhirError as exc:
            RECORD_FAILURES.labels("audit").inc()
            _log.error(
                "bot AuditEvent refused",
                bot=request.bot.reference,
                execution=result.execution_id,
                error=exc.message,
            )
            return None
        return written.stored.id if written.stored is not None else None
