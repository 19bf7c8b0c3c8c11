"""Exceptions raised by the bots package.

Failures of *user code* (a bot that raises, times out or runs out of memory) are never
exceptions: they are :class:`fhirbots.bots.executor.ExecutionResult` values. The exceptions below
are for the people and code around a bot: a deploy that is refused, a FHIR call that fails, an
executor used after it was closed.

Tree (under :class:`fhirbots.schemas.errors.FhirbotsError`)::

    BotError
    ├── BotCompileError        source refused at deploy (syntax or sandbox policy)
    ├── FhirGatewayError       a FHIR call made on a bot's behalf failed
    │   └── AccessDeniedError  the call is outside the bot's access scopes
    ├── PolicyError            a sandbox policy with impossible values (also a ValueError)
    ├── CronError              a cron expression that cannot be parsed (also a ValueError)
    ├── ExecutorError          the executor itself cannot run (closed, cannot start workers)
    │   └── ProjectBusyError   a project's share of the workers and its queue are full
    │
    │   private to the executor and its worker processes:
    ├── WorkerLostError        _pool: a worker died or broke the protocol; it is replaced
    ├── ChannelClosedError     _protocol: the other end closed the channel (also an EOFError)
    ├── FrameTooLargeError     _protocol: a frame over the agreed size (also a ValueError)
    │
    │   raised inside the sandbox, to bot code:
    ├── BotFhirError           _sandbox: a FHIR call failed; bots know it as ``FhirError``
    └── SandboxViolation       _sandbox: bot code reached for something withheld (also an
                               AttributeError, so ``getattr`` with a default and ``hasattr``
                               work on it)

The worker translates nothing a bot raises: whatever it is, it ends the execution as a result.
Pipe and process errors of a worker (``OSError``, ``IncompleteReadError``) become
``WorkerLostError``; the executor turns them into results or ``ExecutorError``.
"""

from __future__ import annotations

from typing import Any

from fhirbots.schemas.errors import FhirbotsError

__all__ = [
    "AccessDeniedError",
    "BotCompileError",
    "BotError",
    "CompileProblem",
    "CronError",
    "ExecutorError",
    "FhirGatewayError",
    "PolicyError",
    "ProjectBusyError",
]


class BotError(FhirbotsError):
    """Root of every exception raised by :mod:`fhirbots.bots`."""


class CompileProblem(tuple[int, int, str]):
    """One reason a bot's source was refused: ``(line, column, message)``.

    Lines are 1-based and columns 0-based, as in :mod:`ast`.
    """

    __slots__ = ()

    def __new__(cls, line: int, column: int, message: str) -> CompileProblem:
        """Build a problem from its three parts."""
        return super().__new__(cls, (line, column, message))

    @property
    def line(self) -> int:
        """1-based line of the problem."""
        return self[0]

    @property
    def column(self) -> int:
        """0-based column of the problem."""
        return self[1]

    @property
    def message(self) -> str:
        """What is wrong and, for policy refusals, how to allow it."""
        return self[2]

    def __str__(self) -> str:
        """``line:column: message``."""
        return f"{self[0]}:{self[1]}: {self[2]}"


class BotCompileError(BotError):
    """A bot's source was refused: a syntax error or a sandbox policy violation.

    Attributes:
        problems: every problem found, in source order.
    """

    def __init__(self, problems: list[CompileProblem]) -> None:
        self.problems = list(problems)
        summary = "; ".join(str(p) for p in self.problems[:5])
        more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"bot source refused: {summary}{more}")


class FhirGatewayError(BotError):
    """A FHIR interaction performed on a bot's behalf failed.

    The bot sees it as a ``FhirError`` it can catch, carrying the same status and outcome.

    Attributes:
        status: HTTP-like status code (404 not found, 403 forbidden, 400 invalid, ...).
        outcome: an ``OperationOutcome`` resource describing the failure.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "processing",
        outcome: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.outcome: dict[str, Any] = outcome or {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": message}],
        }


class AccessDeniedError(FhirGatewayError):
    """A bot tried an interaction outside its access scopes (status 403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=403, code="forbidden")


class ExecutorError(BotError):
    """The executor cannot run executions (closed, or its workers cannot start)."""


class ProjectBusyError(ExecutorError):
    """A project already runs its share of the workers and its queue is full.

    Only callers that asked not to wait in line get it (the API's ``$execute``: 429 with
    ``Retry-After``); subscription and cron runs wait their turn instead.
    """

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Seconds after which a retry has a fair chance."""


class PolicyError(BotError, ValueError):
    """A :class:`fhirbots.bots.policy.SandboxPolicy` was built with impossible values."""


class CronError(BotError, ValueError):
    """A Bot's ``cronString`` cannot be parsed; the message names the field."""
