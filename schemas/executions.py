"""The record of one bot execution (topic ``bots.executions.v1``).

Every execution produces one record, whatever triggered it (``$execute``, a Subscription whose
endpoint is ``Bot/<id>``, a cron tick) and however it ended, so dashboards and audits can follow
bots without reading the AuditEvents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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

    @property
    def key(self) -> str:
        """Partition key: one bot's executions stay in order."""
        return f"{self.project}/{self.bot}"
