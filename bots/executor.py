"""Running bots: the :class:`BotExecutor` port and its worker-pool adapter.

``await executor.execute(request)`` always returns an :class:`ExecutionResult`; a bot that
raises, loops, exhausts memory or kills its worker yields a result with the matching status,
never an exception. :class:`ProcessBotExecutor` keeps a pool of pre-warmed worker processes
(see :mod:`fhirbots.bots._worker`), sends each bot's code to a worker once, answers the bot's FHIR
calls
through a :class:`fhirbots.bots.gateway.FhirGateway` after checking its access scopes, and replaces
any worker that timed out, died or ran out of memory.

Tenants are kept apart: a worker serves one project for its whole life (a worker of another
project is killed and a fresh one started in its place), and each project runs at most its
share of the workers at once (:mod:`fhirbots.bots._fairness`). When an execution ends, the
FHIR call it is waiting for is cancelled, and its deadline travels with every call so that the
datastore does not commit a write after the execution's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import signal
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol

import structlog

from fhirbots.bots import _metrics
from fhirbots.bots._fairness import ProjectSlots
from fhirbots.bots._pool import WorkerLostError, WorkerProcess
from fhirbots.bots._protocol import FrameTooLargeError
from fhirbots.bots.errors import ExecutorError, FhirGatewayError, ProjectBusyError
from fhirbots.bots.gateway import CallContext, FhirGateway
from fhirbots.bots.policy import EffectiveLimits, SandboxPolicy
from fhirbots.bots.scopes import check_call
from fhirbots.schemas.bot import AuditEventTrigger, Bot
from fhirbots.schemas.events import CausationLink, ChangeEvent

__all__ = [
    "BotExecutor",
    "ExecutionRequest",
    "ExecutionResult",
    "ExecutionStatus",
    "ProcessBotExecutor",
]

ExecutionStatus = Literal["success", "error", "timeout", "killed", "memory"]
"""How an execution ended."""

RESPAWN_DELAY_SECONDS = 1.0
"""Pause before retrying a worker that failed to start, so a broken host is not hammered."""

_log = structlog.get_logger("fhirbots.bots.executor")


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    """One execution of a bot."""

    bot: Bot
    """The bot to run (its code, limits, scopes and secret names)."""
    input: Any = None
    """What the bot receives as ``event.input`` (JSON-like: a resource, an HL7v2 string...)."""
    content_type: str = "application/fhir+json"
    """Media type of ``input``."""
    project: str = "default"
    """Project the bot runs in; FHIR calls stay inside it."""
    secrets: Mapping[str, str] = field(default_factory=dict)
    """The project's secrets; the bot sees only those named in its ``secret`` list."""
    trace_id: str | None = None
    """W3C traceparent of whatever triggered the execution."""
    requester: str | None = None
    """Who triggered it (``Practitioner/1``, ``ApiKey/x``...)."""
    idempotency_key: str | None = None
    """Key of the triggering delivery, passed through to the bot and the gateway."""
    execution_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Id of this execution (for logs, audit and the causation chain)."""
    causation: tuple[CausationLink, ...] = ()
    """Bot executions that led to the triggering change, oldest first."""

    @classmethod
    def from_change(
        cls,
        bot: Bot,
        change: ChangeEvent,
        *,
        secrets: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> ExecutionRequest:
        """The request for a bot triggered by a committed change.

        The input is the new version (the previous one on delete), the requester the change's
        author, the trace its traceparent, and the causation chain the change's own.

        Args:
            bot: the triggered bot.
            change: the change event.
            secrets: the project's secrets.
            idempotency_key: key of the delivery (e.g. ``<subscription>/<eventNumber>``);
                defaults to the change's event id.
        """
        return cls(
            bot=bot,
            input=change.resource if change.resource is not None else change.previous,
            project=change.project,
            secrets=dict(secrets or {}),
            trace_id=change.traceparent,
            requester=change.author,
            idempotency_key=idempotency_key or change.event_id,
            causation=change.causation,
        )

    def visible_secrets(self) -> dict[str, str]:
        """The secrets this bot may read."""
        allowed = set(self.bot.secret)
        return {name: value for name, value in self.secrets.items() if name in allowed}

    def call_context(self, deadline: float | None = None) -> CallContext:
        """The context of FHIR calls this execution makes (ending at ``deadline``)."""
        author = self.bot.reference
        if self.bot.run_as == "author" and self.requester:
            author = self.requester
        return CallContext(
            project=self.project,
            bot=self.bot.reference,
            execution_id=self.execution_id,
            author=author,
            requester=self.requester,
            trace_id=self.trace_id,
            idempotency_key=self.idempotency_key,
            causation=(
                *self.causation,
                CausationLink(bot=self.bot.reference, execution=self.execution_id),
            ),
            deadline=deadline,
            allows=None if self.bot.access is None else self.bot.allows,
        )

    @property
    def loops(self) -> bool:
        """Whether this bot already appears in the chain that triggered it (a bot loop)."""
        return any(link.bot == self.bot.reference for link in self.causation)


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """How an execution ended. Failures of bot code are results, not exceptions."""

    status: ExecutionStatus
    """``success``, ``error`` (the bot raised or returned something unusable), ``timeout``
    (wall clock or CPU), ``killed`` (the worker died), ``memory`` (memory limit)."""
    execution_id: str
    output: Any = None
    """The handler's return value (JSON-like) on success."""
    logs: str = ""
    """Captured ``print`` and ``logger`` text (size-capped)."""
    error: str | None = None
    """What went wrong, with the bot's own traceback lines."""
    duration_ms: float = 0.0
    """Wall-clock time from dispatch to result."""
    fhir_calls: int = 0
    """FHIR calls the bot made."""

    @property
    def ok(self) -> bool:
        """Whether the bot succeeded."""
        return self.status == "success"

    def needs_audit(self, trigger: AuditEventTrigger) -> bool:
        """Whether this result should be recorded as an AuditEvent under ``trigger``."""
        if trigger == "always":
            return True
        if trigger == "on-error":
            return not self.ok
        if trigger == "on-output":
            return not self.ok or self.output is not None
        return False


class BotExecutor(Protocol):
    """Port: runs bots. Adapters: :class:`ProcessBotExecutor`."""

    async def execute(self, request: ExecutionRequest, *, bounded: bool = False) -> ExecutionResult:
        """Run one execution; never raises for failures of the bot's code.

        ``bounded``: refuse (:class:`fhirbots.bots.errors.ProjectBusyError`) rather than wait
        when the project's queue is full.
        """
        ...


def _failure(status: int, message: str) -> dict[str, Any]:
    return {"op": "fhir_result", "ok": False, "status": status, "message": message}


def _call_cost(message: Mapping[str, Any]) -> int:
    """What a FHIR call counts against ``max_fhir_calls``: one, or one per Bundle entry."""
    if message.get("method") != "transaction":
        return 1
    args = message.get("args")
    bundle = args.get("bundle") if isinstance(args, dict) else None
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    return max(1, len(entries)) if isinstance(entries, list) else 1


class _Outcome:
    """What the worker loop learnt, filled in as it goes."""

    __slots__ = ("done", "fhir_calls")

    def __init__(self) -> None:
        self.done: dict[str, Any] | None = None
        self.fhir_calls = 0


class ProcessBotExecutor:
    """Runs bots in a pool of sandboxed worker processes.

    Use as an async context manager, or call :meth:`start` and :meth:`close`::

        async with ProcessBotExecutor(gateway, SandboxPolicy().with_timeout(5)) as executor:
            result = await executor.execute(ExecutionRequest(bot=bot, input=resource))
    """

    def __init__(self, gateway: FhirGateway, policy: SandboxPolicy | None = None) -> None:
        """Create an executor (no process starts until :meth:`start`).

        Args:
            gateway: performs the bots' FHIR calls.
            policy: sandbox limits and allow-lists; defaults to ``SandboxPolicy()``.
        """
        self._gateway = gateway
        self.policy = policy or SandboxPolicy()
        self._idle: list[WorkerProcess] = []
        """Idle workers, least recently used first."""
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._workers: set[WorkerProcess] = set()
        self._capacity = asyncio.Semaphore(self.policy.pool_size)
        """Executions running at once: ``pool_size``, whatever the spare workers."""
        self.slots = ProjectSlots(
            self.policy.project_share,
            self.policy.project_queue,
            retry_after=max(1, math.ceil(self.policy.timeout_seconds)),
        )
        """Each project's share of the workers and its queue."""
        self._spawners: set[asyncio.Task[None]] = set()
        self._starting = 0
        """Replacement workers being started (each will be clean)."""
        self._started = False
        self._closed = False

    async def __aenter__(self) -> ProcessBotExecutor:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        return sorted(w.pid for w in self._workers if w.alive)

    async def start(self) -> None:
        """Start and warm up the pool; returns when every worker is ready.

        Raises:
            ExecutorError: the executor is closed or a worker could not start.
        """
        if self._closed:
            raise ExecutorError("the executor is closed")
        if self._started:
            return
        self._started = True
        try:
            count = self.policy.pool_size + self.policy.spare_workers
            workers = await asyncio.gather(
                *(WorkerProcess.spawn(self.policy) for _ in range(count))
            )
        except (OSError, WorkerLostError, TimeoutError) as exc:
            await self.close()
            raise ExecutorError(f"bot workers could not start: {exc}") from exc
        for worker in workers:
            self._workers.add(worker)
            self._release(worker)
        _log.info("bot workers started", pids=self.worker_pids)

    async def close(self) -> None:
        """Stop every worker. Executions still running end as ``killed``."""
        self._closed = True
        while self._waiters:  # they see the executor closed
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        for task in list(self._spawners):
            task.cancel()
        for task in list(self._spawners):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.gather(*(w.stop() for w in list(self._workers)), return_exceptions=True)
        self._workers.clear()

    def check_admission(self, project: str) -> None:
        """Refuse now what :meth:`execute` with ``bounded=True`` would refuse (for callers
        that answer before the execution runs, such as an asynchronous ``$execute``).

        Raises:
            ProjectBusyError: the project's queue is full.
        """
        if self.slots.running(project) >= self.slots.limit and (
            self.slots.waiting(project) >= self.slots.queue_limit
        ):
            raise ProjectBusyError(
                f"project {project!r} already runs its share of the bot workers and "
                f"{self.slots.queue_limit} executions wait; retry later",
                self.slots.retry_after,
            )

    async def execute(self, request: ExecutionRequest, *, bounded: bool = False) -> ExecutionResult:
        """Run one execution; failures of the bot are results, never exceptions.

        The execution first waits for a slot of its project (:mod:`fhirbots.bots._fairness`),
        then for a worker that serves that project or none yet.

        Args:
            request: the execution.
            bounded: when the project's queue is full, refuse instead of waiting in line
                (direct callers); subscription and cron runs leave it False.

        Raises:
            ProjectBusyError: ``bounded`` and the project's queue is full.
            ExecutorError: the executor is closed or cannot start.
        """
        await self.start()
        await self.slots.acquire(request.project, bounded=bounded)
        try:
            async with self._capacity:
                return await self._execute(request)
        finally:
            self.slots.release(request.project)

    async def _execute(self, request: ExecutionRequest) -> ExecutionResult:
        limits = self.policy.limits_for(request.bot.timeout, request.bot.memory_limit_bytes)
        worker = await self._acquire(request.project)
        started = time.perf_counter()
        outcome = _Outcome()
        keep = False
        try:
            async with asyncio.timeout(limits.timeout_seconds):
                deadline = time.monotonic() + limits.timeout_seconds
                await self._run(worker, request, limits, outcome, deadline)
            done = outcome.done or {}
            status: ExecutionStatus = done.get("status", "error")
            error = done.get("error")
            keep = (
                not done.get("recycle")
                and worker.executions < self.policy.max_executions_per_worker
            )
            reason = "memory" if status == "memory" else "recycle"
        except TimeoutError:
            status = "timeout"
            error = f"the bot ran longer than its {limits.timeout_seconds:g} s timeout"
            done, reason = {}, "timeout"
        except WorkerLostError as exc:
            status, error = self._lost_status(exc, limits)
            done, reason = {}, status
        except asyncio.CancelledError:
            self._discard(worker, "cancelled")
            raise
        except Exception as exc:  # a protocol or engine bug: contain it, keep serving
            _log.exception("bot execution broke", bot=request.bot.reference)
            status, error = "killed", f"internal error running the bot: {type(exc).__name__}"
            done, reason = {}, "internal"
        finally:
            if keep:
                self._release(worker)
        if not keep:
            self._discard(worker, reason)
        seconds = time.perf_counter() - started
        _metrics.EXECUTIONS.labels(status).inc()
        _metrics.EXECUTION_SECONDS.observe(seconds)
        if status != "success":
            _log.info(
                "bot execution failed",
                bot=request.bot.reference,
                execution=request.execution_id,
                status=status,
            )
        return ExecutionResult(
            status=status,
            execution_id=request.execution_id,
            output=done.get("output"),
            logs=done.get("logs") or "",
            error=error,
            duration_ms=seconds * 1000.0,
            fhir_calls=outcome.fhir_calls,
        )

    @staticmethod
    def _lost_status(exc: WorkerLostError, limits: EffectiveLimits) -> tuple[ExecutionStatus, str]:
        if exc.returncode == -signal.SIGXCPU:
            return "timeout", f"the bot used more than {limits.cpu_seconds} s of CPU time"
        detail = exc.signal_name or f"exit code {exc.returncode}"
        return "killed", f"the bot's worker process died ({detail}): {exc}"

    async def _acquire(self, project: str) -> WorkerProcess:
        """An idle worker of ``project``, or a clean one; a worker that served another
        project is never handed over: it is killed and a fresh one started instead."""
        while True:
            if self._closed:
                raise ExecutorError("the executor is closed")
            worker = self._take_idle(project)
            if worker is not None and worker.project not in (None, project) and self._starting:
                self._idle.insert(0, worker)  # a clean worker is starting: wait for it instead
                worker = None
            if worker is None:
                await self._wait_for_worker()
                continue
            if not worker.alive:
                self._discard(worker, "died")
            elif worker.project == project:
                return worker
            elif worker.project is None:
                worker.project = project
                self._replenish()
                return worker
            else:
                self._discard(worker, "project")

    def _replenish(self) -> None:
        """A clean worker was taken: unless enough clean ones remain (or are starting),
        retire the least recently used idle worker of a project, whose replacement is clean."""
        clean = sum(w.project is None for w in self._idle) + self._starting
        if clean >= self.policy.spare_workers:
            return
        for index, worker in enumerate(self._idle):
            if worker.project is not None:
                self._discard(self._idle.pop(index), "spare")
                return

    def _take_idle(self, project: str) -> WorkerProcess | None:
        for wanted in (project, None):
            for index, worker in enumerate(self._idle):
                if worker.project == wanted:
                    return self._idle.pop(index)
        return self._idle.pop(0) if self._idle else None

    async def _wait_for_worker(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # we were woken for a worker we will not take: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def _release(self, worker: WorkerProcess) -> None:
        """Put ``worker`` back in the idle list and wake the first execution waiting."""
        self._idle.append(worker)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _discard(self, worker: WorkerProcess, reason: str) -> None:
        """Kill ``worker`` and start its replacement in the background."""
        self._workers.discard(worker)
        _metrics.WORKER_REPLACEMENTS.labels(reason).inc()
        self._starting += 1
        task = asyncio.get_running_loop().create_task(self._replace(worker))
        self._spawners.add(task)
        task.add_done_callback(self._spawners.discard)

    async def _replace(self, worker: WorkerProcess) -> None:
        counted = True  # in self._starting until the fresh worker is released
        try:
            await worker.kill()
            while not self._closed:
                try:
                    fresh = await WorkerProcess.spawn(self.policy)
                except (OSError, WorkerLostError, TimeoutError) as exc:
                    _log.error("bot worker failed to start", error=str(exc))
                    await asyncio.sleep(RESPAWN_DELAY_SECONDS)
                    continue
                if self._closed:
                    await fresh.stop()
                    return
                self._starting -= 1  # before the release, which may hand it out at once
                counted = False
                self._workers.add(fresh)
                self._release(fresh)
                return
        finally:
            if counted:
                self._starting -= 1

    async def _run(
        self,
        worker: WorkerProcess,
        request: ExecutionRequest,
        limits: EffectiveLimits,
        outcome: _Outcome,
        deadline: float,
    ) -> None:
        bot = request.bot
        digest = hashlib.sha256(bot.code.encode("utf-8", "surrogatepass")).hexdigest()
        message: dict[str, Any] = {
            "op": "exec",
            "digest": digest,
            "limits": {"cpu_seconds": limits.cpu_seconds, "memory_bytes": limits.memory_bytes},
            "event": {
                "input": request.input,
                "content_type": request.content_type,
                "secrets": request.visible_secrets(),
                "trace_id": request.trace_id,
                "bot": {"id": bot.id, "name": bot.name, "reference": bot.reference},
                "requester": request.requester,
                "idempotency_key": request.idempotency_key,
                "execution_id": request.execution_id,
            },
        }
        if not worker.knows(digest):
            message["source"] = bot.code
        worker.executions += 1
        try:
            await worker.send(message)
        except TypeError as exc:
            outcome.done = {"status": "error", "error": f"input is not JSON-serialisable: {exc}"}
            return
        except FrameTooLargeError as exc:
            outcome.done = {"status": "error", "error": f"input is too large: {exc}"}
            return
        worker.remember(digest)
        context = request.call_context(deadline)
        while True:
            reply = await worker.receive()
            op = reply.get("op")
            if op == "done":
                outcome.done = reply
                return
            if op == "fhir":
                cost = _call_cost(reply)
                if outcome.fhir_calls + cost > self.policy.max_fhir_calls:
                    left = max(0, self.policy.max_fhir_calls - outcome.fhir_calls)
                    answer = _failure(
                        429,
                        f"this call counts {cost} against SandboxPolicy.max_fhir_calls "
                        f"({self.policy.max_fhir_calls} per execution, a Bundle entry each) "
                        f"and only {left} remain",
                    )
                else:
                    outcome.fhir_calls += cost
                    answer = await self._call_while_alive(worker, bot, context, reply)
                try:
                    await worker.send(answer)
                except (FrameTooLargeError, TypeError) as exc:
                    await worker.send(_failure(413, f"FHIR response cannot be delivered: {exc}"))
            elif op == "need_source":
                await worker.send({"op": "source", "source": bot.code})
            else:
                await worker.kill()
                raise WorkerLostError(f"worker sent unexpected {op!r}", worker.process.returncode)

    async def _call_while_alive(
        self, worker: WorkerProcess, bot: Bot, context: CallContext, message: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Perform a FHIR call, cancelled at once if the worker dies meanwhile (the timeout
        cancels it too, by cancelling this whole coroutine)."""
        call = asyncio.ensure_future(self._fhir_call(bot, context, message))
        died = asyncio.ensure_future(worker.process.wait())
        try:
            await asyncio.wait((call, died), return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
            if not call.done():
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call
        if not call.cancelled():
            return call.result()
        raise WorkerLostError("worker exited during a FHIR call", worker.process.returncode)

    async def _fhir_call(
        self, bot: Bot, context: CallContext, message: Mapping[str, Any]
    ) -> dict[str, Any]:
        method = str(message.get("method"))
        args = message.get("args")
        try:
            if not isinstance(args, dict):
                raise FhirGatewayError("malformed FHIR call", code="invalid")
            check_call(bot, method, args)
            value = await self._dispatch(context, method, args)
        except FhirGatewayError as exc:
            _metrics.FHIR_CALLS.labels(method, str(exc.status)).inc()
            return {
                "op": "fhir_result",
                "ok": False,
                "status": exc.status,
                "message": str(exc),
                "outcome": exc.outcome,
            }
        except Exception as exc:  # a gateway bug must not take the executor down
            _log.exception("FHIR gateway failed", method=method, bot=bot.reference)
            _metrics.FHIR_CALLS.labels(method, "500").inc()
            return _failure(500, f"internal error performing {method}: {type(exc).__name__}")
        _metrics.FHIR_CALLS.labels(method, "ok").inc()
        return {"op": "fhir_result", "ok": True, "value": value}

    async def _dispatch(self, ctx: CallContext, method: str, args: dict[str, Any]) -> Any:
        gateway = self._gateway
        if method == "read":
            return await gateway.read(ctx, args["resource_type"], str(args.get("resource_id")))
        if method == "create":
            return await gateway.create(ctx, args["resource"])
        if method == "update":
            return await gateway.update(ctx, args["resource"])
        if method == "patch":
            patch = args.get("patch")
            if not isinstance(patch, list):
                raise FhirGatewayError("patch must be a list of JSON Patch operations")
            return await gateway.patch(
                ctx, args["resource_type"], str(args.get("resource_id")), patch
            )
        if method == "delete":
            await gateway.delete(ctx, args["resource_type"], str(args.get("resource_id")))
            return None
        if method == "search":
            params = args.get("params") or {}
            if not isinstance(params, dict):
                raise FhirGatewayError("search params must be an object")
            return await gateway.search(ctx, args["resource_type"], params)
        return await gateway.transaction(ctx, args["bundle"])
