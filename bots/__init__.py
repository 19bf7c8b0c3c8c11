"""Sandboxed Python bots: compile, run in worker processes, test locally.

Public API (importable from ``bots``)::

    compile_bot, CompiledBot              deploy-time checks (fhirbots.bots.compile)
    SandboxPolicy                         limits and allow-lists (fhirbots.bots.policy)
    CronSchedule                          Bot.cronString schedules (fhirbots.bots.cron)
    BotExecutor, ProcessBotExecutor,      running bots (fhirbots.bots.executor)
    ExecutionRequest, ExecutionResult
    FhirGateway, CallContext              the port for a bot's FHIR calls (fhirbots.bots.gateway)
    BotError, BotCompileError, ...        exceptions (fhirbots.bots.errors)

The local harness lives in :mod:`fhirbots.bots.testing`. Names are loaded on first use, so that
worker processes, which import this package, do not load the engine-side modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhirbots.bots.compile import CompiledBot, compile_bot
    from fhirbots.bots.cron import CronSchedule
    from fhirbots.bots.errors import (
        AccessDeniedError,
        BotCompileError,
        BotError,
        CompileProblem,
        CronError,
        ExecutorError,
        FhirGatewayError,
        PolicyError,
    )
    from fhirbots.bots.executor import (
        BotExecutor,
        ExecutionRequest,
        ExecutionResult,
        ProcessBotExecutor,
    )
    from fhirbots.bots.gateway import CallContext, FhirGateway
    from fhirbots.bots.policy import SandboxPolicy

__all__ = [
    "AccessDeniedError",
    "BotCompileError",
    "BotError",
    "BotExecutor",
    "CallContext",
    "CompileProblem",
    "CompiledBot",
    "CronError",
    "CronSchedule",
    "ExecutionRequest",
    "ExecutionResult",
    "ExecutorError",
    "FhirGateway",
    "FhirGatewayError",
    "PolicyError",
    "ProcessBotExecutor",
    "SandboxPolicy",
    "compile_bot",
]

_HOMES = {
    "CompiledBot": "fhirbots.bots.compile",
    "compile_bot": "fhirbots.bots.compile",
    "AccessDeniedError": "fhirbots.bots.errors",
    "BotCompileError": "fhirbots.bots.errors",
    "BotError": "fhirbots.bots.errors",
    "CompileProblem": "fhirbots.bots.errors",
    "ExecutorError": "fhirbots.bots.errors",
    "FhirGatewayError": "fhirbots.bots.errors",
    "PolicyError": "fhirbots.bots.errors",
    "BotExecutor": "fhirbots.bots.executor",
    "ExecutionRequest": "fhirbots.bots.executor",
    "ExecutionResult": "fhirbots.bots.executor",
    "ProcessBotExecutor": "fhirbots.bots.executor",
    "CallContext": "fhirbots.bots.gateway",
    "FhirGateway": "fhirbots.bots.gateway",
    "SandboxPolicy": "fhirbots.bots.policy",
    "CronSchedule": "fhirbots.bots.cron",
    "CronError": "fhirbots.bots.errors",
}


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bots' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
