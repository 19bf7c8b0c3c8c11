"""The record of one bot execution (topic ``bots.executions.v1``).

Every execution produces one record, whatever triggered it (``$execute``, a Subscription whose
endpoint is ``Bot/<id>``, a cron tick) and however it ended, so dashboards and audits can follow
bots without reading the AuditEvents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fhirbots.schemas.bot import ExecutionRecording
from fhirbots.schemas.events import CausationLink

__all__ = ["BotExecutionRecord", "ExecutionTrigger"]

ExecutionTrigger = Literal["execute", "subscription", "cron", "local"]
"""What started an execution."""


class BotExecutionRecord(BaseModel):
    """How one execution of a bot went."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    execution_id: str = Field(description="Id of the execution (also in the causation chain).")
    project: str
    bot: str = Field(description="`Bot/<id>` of the bot that ran.")
    bot_version: str | None = Field(default=None, description="versionId of the Bot that ran.")
    trigger: ExecutionTrigger
    status: Literal["success", "error", "timeout", "killed", "memory", "skipped"] = Field(
        description="How it ended; `skipped` when the loop guard refused to run it."
    )
    started: datetime
    duration_ms: float
    logs: str = ""
    output: Any = None
    error: str | None = None
    fhir_calls: int = 0
    trace_id: str | None = Field(default=None, description="W3C traceparent of the trigger.")
    requester: str | None = None
    idempotency_key: str | None = None
    causation: tuple[CausationLink, ...] = Field(
        default=(), description="Bot executions that led to the trigger, oldest first."
    )
    notification_id: str | None = Field(
        default=None, description="The notification that triggered it (subscription runs)."
    )
    input: Any = Field(default=None, description="What the bot was given (kept as recorded).")
    recording: ExecutionRecording = Field(
        default="all",
        description="The Bot's `executionRecording` when it ran: whether this record is kept "
        "beyond counters (`errors`: only when the run did not succeed).",
    )

    @property
    def kept(self) -> bool:
        """Whether the record itself is kept (not only counted), per :attr:`recording`."""
        if self.recording == "all":
            return True
        return self.recording == "errors" and self.status not in ("success", "skipped")

    @property
    def key(self) -> str:
        """Partition key: one bot's executions stay in order."""
        return f"{self.project}/{self.bot}"
