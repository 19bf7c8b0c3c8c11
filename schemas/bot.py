"""The ``Bot`` custom resource: a deployable piece of sandboxed Python automation.

A Bot is stored like any FHIR resource (``resourceType: "Bot"``) and validated by :class:`Bot`.
Field names follow Medplum's Bot resource where one exists (``auditEventTrigger``,
``cronString``, ``runtimeVersion``, ``timeout``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

__all__ = [
    "AccessScope",
    "AuditEventTrigger",
    "Bot",
    "BotIdentifier",
    "BotInteraction",
    "BotStatus",
    "ExecutionRecording",
    "RunAs",
]

BotInteraction = Literal["read", "search", "create", "update", "patch", "delete"]
"""FHIR interactions an access scope can grant."""

AuditEventTrigger = Literal["always", "never", "on-error", "on-output"]
"""When an execution is recorded as an AuditEvent."""

BotStatus = Literal["draft", "active", "retired"]
"""Only ``active`` bots are triggered."""

RunAs = Literal["bot", "author"]

ExecutionRecording = Literal["all", "errors", "none"]
"""What is kept of a bot's executions for the dashboard beyond counters: every run (its input,
output and logs), only the runs that did not succeed, or nothing."""
"""Whose identity a bot's writes carry: the bot's own, or the author of the triggering change."""

MAX_TIMEOUT_SECONDS = 900
"""Fifteen minutes, the ceiling of serverless runtimes; longer work belongs in a queue."""

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RESOURCE_TYPE = re.compile(r"^(\*|[A-Z][A-Za-z]{1,63})$")
_SECRET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?]+$")


class _Element(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel
    )


class BotIdentifier(_Element):
    """A business identifier of the bot (FHIR ``Identifier``, the commonly used parts)."""

    system: str | None = None
    value: str


class AccessScope(_Element):
    """Interactions a bot may perform on one resource type (``*`` for every type)."""

    resource_type: str = Field(description="A FHIR resource type, or `*` for all of them.")
    interaction: tuple[BotInteraction, ...] = Field(min_length=1)

    @field_validator("resource_type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        if not _RESOURCE_TYPE.match(value):
            raise ValueError(f"not a resource type or '*': {value!r}")
        return value

    def allows(self, resource_type: str, interaction: str) -> bool:
        """Whether this scope grants ``interaction`` on ``resource_type``."""
        return self.resource_type in ("*", resource_type) and interaction in self.interaction


class Bot(_Element):
    """A Bot resource.

    ``access`` omitted means the bot may do anything inside its project; an empty list means
    it may make no FHIR calls at all.
    """

    resource_type: Literal["Bot"] = "Bot"
    id: str | None = None
    meta: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    extension: tuple[dict[str, Any], ...] | None = None
    identifier: tuple[BotIdentifier, ...] = ()
    name: str = Field(min_length=1, max_length=256)
    description: str | None = None
    status: BotStatus = "active"
    code: str = Field(description="Python source defining `def handler(fhir, event)`.")
    runtime_version: Literal["python-restricted"] = "python-restricted"
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_SECONDS, description="Wall-clock seconds."
    )
    memory_limit: int | None = Field(
        default=None, ge=64, le=4096, description="Address-space ceiling in MiB."
    )
    audit_event_trigger: AuditEventTrigger = "always"
    cron_string: str | None = Field(
        default=None, description="Five-field cron expression (minute hour day month weekday)."
    )
    run_as: RunAs = "bot"
    execution_recording: ExecutionRecording = Field(
        default="all",
        description="Which executions are kept (with input, output and logs) beyond counters.",
    )
    access: tuple[AccessScope, ...] | None = None
    secret: tuple[str, ...] = Field(
        default=(), description="Names of project secrets this bot may read."
    )

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str | None) -> str | None:
        if value is not None and not _FHIR_ID.match(value):
            raise ValueError(f"not a FHIR id: {value!r}")
        return value

    @field_validator("cron_string")
    @classmethod
    def _check_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        fields = value.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"not a five-field cron expression: {value!r}")
        return value

    @field_validator("secret")
    @classmethod
    def _check_secrets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [name for name in value if not _SECRET_NAME.match(name)]
        if bad:
            raise ValueError(f"not secret names: {bad}")
        return value

    @property
    def reference(self) -> str:
        """``Bot/<id>`` (``Bot/unsaved`` before the bot has an id)."""
        return f"Bot/{self.id or 'unsaved'}"

    @property
    def memory_limit_bytes(self) -> int | None:
        """``memoryLimit`` in bytes, if set."""
        return None if self.memory_limit is None else self.memory_limit * 1024 * 1024

    def allows(self, resource_type: str, interaction: str) -> bool:
        """Whether the bot's access scopes grant ``interaction`` on ``resource_type``."""
        if self.access is None:
            return True
        return any(scope.allows(resource_type, interaction) for scope in self.access)

    @classmethod
    def from_resource(cls, resource: dict[str, Any]) -> Bot:
        """Validate a Bot resource given as FHIR JSON (a dict)."""
        return cls.model_validate(resource)

    def to_resource(self) -> dict[str, Any]:
        """The resource as FHIR JSON (camelCase, no empty fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
