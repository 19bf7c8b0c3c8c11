"""Sandboxed Python bots: compile, run in worker processes, test locally.

Public API (importable from ``bots``)::

    compile_bot, CompiledBot              deploy-time checks (bots.compile)
    SandboxPolicy                         limits and allow-lists (bots.policy)
    CronSchedule                          Bot.cronString schedules (bots.cron)
    BotExecutor, ProcessBotExecutor,      running bots (bots.executor)
    ExecutionRequest, ExecutionResult
    FhirGateway, CallContext              the port for a bot's FHIR calls (bots.gateway)
    BotError, BotCompileError, ...        exceptions (bots.errors)

The local harness lives in :mod:`bots.testing`. Names are loaded on first use, so that worker
processes, which import this package, do not load the engine-side modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bots.compile import CompiledBot, compile_bot
    from bots.cron import CronSchedule
    from bots.errors import (
        AccessDeniedError,
        BotCompileError,
        BotError,
        CompileProblem,
        CronError,
        ExecutorError,
        FhirGatewayError,
        PolicyError,
    )
    from bots.executor import BotExecutor, ExecutionRequest, ExecutionResult, ProcessBotExecutor
    from bots.gateway import CallContext, FhirGateway
    from bots.policy import SandboxPolicy

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
    "CompiledBot": "bots.compile",
    "compile_bot": "bots.compile",
    "AccessDeniedError": "bots.errors",
    "BotCompileError": "bots.errors",
    "BotError": "bots.errors",
    "CompileProblem": "bots.errors",
    "ExecutorError": "bots.errors",
    "FhirGatewayError": "bots.errors",
    "PolicyError": "bots.errors",
    "BotExecutor": "bots.executor",
    "ExecutionRequest": "bots.executor",
    "ExecutionResult": "bots.executor",
    "ProcessBotExecutor": "bots.executor",
    "CallContext": "bots.gateway",
    "FhirGateway": "bots.gateway",
    "SandboxPolicy": "bots.policy",
    "CronSchedule": "bots.cron",
    "CronError": "bots.errors",
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
