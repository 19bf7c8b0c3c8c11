"""The bot runtime of an engine process: loads Bots, runs them, records every execution.

:class:`BotRuntime` is what the rest of the engine talks to:

* the API's ``$execute`` (:meth:`BotRuntime.run`, :meth:`BotRuntime.submit` for
  ``Prefer: respond-async``);
* the dispatcher, for Subscriptions whose endpoint is ``Bot/<id>``: the runtime *is* its
  :class:`fhirbots.engine.delivery.bot.BotInvoker` (:meth:`BotRuntime.invoke`);
* the cron scheduler (:mod:`fhirbots.engine.automation.scheduler`), which the runtime builds
  in :meth:`BotRuntime.start` and which sees it only as its port
  :class:`fhirbots.engine.automation.scheduler.BotRunner`.

Executions run in a :class:`fhirbots.bots.executor.ProcessBotExecutor` whose FHIR calls go through
:class:`fhirbots.engine.automation.engine_gateway.EngineFhirGateway`. The pool of sandbox workers
starts on first use, so a process that never runs a bot never starts one.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from fhirbots.bots.errors import ExecutorError
from fhirbots.bots.executor import ExecutionRequest, ExecutionResult, ProcessBotExecutor
from fhirbots.bots.gateway import FhirGateway
from fhirbots.bots.policy import SandboxPolicy
from fhirbots.engine.automation.engine_gateway import EngineFhirGateway, GetUrl
from fhirbots.engine.automation.loaded import LoadedBot
from fhirbots.engine.automation.records import EventLogSource, ExecutionRecorder, build_record
from fhirbots.engine.automation.scheduler import CronScheduler
from fhirbots.engine.automation.secrets import SECRETS_DIR, DirectorySecrets, SecretSource
from fhirbots.engine.automation.store import BotStore, Job
from fhirbots.engine.automation.store_sqlite import BOTS_DB, SqliteBotStore
from fhirbots.engine.delivery.bot import BotInvocation
from fhirbots.engine.errors import FhirError, NotFound, Unprocessable
from fhirbots.engine.fhir.search import SearchService
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.observability import otel
from fhirbots.engine.settings import Settings
from fhirbots.schemas.bot import Bot
from fhirbots.schemas.events import CausationLink
from fhirbots.schemas.executions import BotExecutionRecord, ExecutionTrigger
from fhirbots.schemas.notifications import Notification

__all__ = ["JOB_DRAIN_SECONDS", "BotRuntime", "create_bot_store", "result_json"]

JOB_DRAIN_SECONDS = 5.0
"""On shutdown, how long running async jobs may finish before they are cancelled."""

_log = structlog.get_logger(__name__)


def result_json(result: ExecutionResult) -> dict[str, Any]:
    """An execution's outcome as JSON (async job results, CLI output)."""
    return {
        "executionId": result.execution_id,
        "status": result.status,
        "output": result.output,
        "logs": result.logs,
        "error": result.error,
        "durationMs": round(result.duration_ms, 3),
        "fhirCalls": result.fhir_calls,
    }


def create_bot_store(settings: Settings) -> BotStore:
    """PostgreSQL (the datastore's database) when configured, else ``bots.db``."""
    if settings.database_url:
        # Imported only when configured: the embedded engine never loads asyncpg.
        from fhirbots.engine.automation.store_postgres import PostgresBotStore

        return PostgresBotStore(settings.database_url, migrate=settings.migrates_on_start)
    return SqliteBotStore(settings.data_dir / BOTS_DB, migrate=settings.migrates_on_start)


class BotRuntime:
    """Runs the Bots of an engine.

    Args:
        fhir: The engine's FHIR service (reads Bots, writes AuditEvents).
        gateway: Performs the bots' FHIR calls.
        store: Cron claims and async jobs (opened on first use).
        secrets: Project secrets.
        recorder: Writes execution records and AuditEvents.
        policy: Sandbox policy of the executor.
    """

    def __init__(
        self,
        *,
        fhir: FhirService,
        gateway: FhirGateway,
        store: BotStore,
        secrets: SecretSource,
        recorder: ExecutionRecorder,
        policy: SandboxPolicy | None = None,
    ) -> None:
        self.fhir = fhir
        self.policy = policy or SandboxPolicy()
        self.executor = ProcessBotExecutor(gateway, self.policy)
        self.secrets = secrets
        self.recorder = recorder
        self._store = store
        self._store_open = False
        self._store_lock = asyncio.Lock()
        self._jobs: set[asyncio.Task[None]] = set()
        self.scheduler: CronScheduler | None = None
        """The cron scheduler once :meth:`start` ran with ``cron=True``."""

    @classmethod
    def for_engine(
        cls,
        settings: Settings,
        *,
        fhir: FhirService,
        search: SearchService,
        get_url: GetUrl,
        event_log: EventLogSource,
        policy: SandboxPolicy,
    ) -> BotRuntime:
        """The runtime of an engine built from ``settings``.

        Args:
            settings: The engine's settings (base URL, bot store, data dir).
            fhir: The engine's FHIR service.
            search: The engine's search service (the bots' searches).
            get_url: Resolves GET entries of the bots' Bundles.
            event_log: The event log execution records go to, once open.
            policy: The sandbox policy, built once at the entry point
                (:meth:`fhirbots.engine.settings.Settings.sandbox_policy`).
        """
        return cls(
            fhir=fhir,
            gateway=EngineFhirGateway(fhir, search, get_url, settings.base_url()),
            store=create_bot_store(settings),
            secrets=DirectorySecrets(settings.data_dir / SECRETS_DIR),
            recorder=ExecutionRecorder(fhir, event_log),
            policy=policy,
        )

    async def store(self) -> BotStore:
        """The bot store, opened on first use."""
        if not self._store_open:
            async with self._store_lock:
                if not self._store_open:
                    await self._store.open()
                    self._store_open = True
        return self._store

    async def start(self, *, cron: bool = True) -> None:
        """Warm up the executor's workers and, with ``cron``, run the cron scheduler."""
        await self.executor.start()
        if cron and self.scheduler is None:
            self.scheduler = CronScheduler(self, self.fhir.storage, await self.store())
            self.scheduler.start()

    async def close(self) -> None:
        """Stop the scheduler, let async jobs finish briefly, stop the workers and the store."""
        if self.scheduler is not None:
            await self.scheduler.stop()
            self.scheduler = None
        if self._jobs:
            _, pending = await asyncio.wait(list(self._jobs), timeout=JOB_DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.executor.close()
        if self._store_open:
            await self._store.close()
            self._store_open = False

    async def load(self, project: str, bot_id: str) -> LoadedBot:
        """The current version of ``Bot/<bot_id>`` in ``project``.

        Raises:
            NotFound: no such Bot (410 Gone if deleted).
            Unprocessable: the stored resource no longer validates.
        """
        stored = await self.fhir.read(project, "Bot", bot_id)
        assert stored.content is not None  # read() refuses deletions
        try:
            bot = Bot.from_resource(stored.content)
        except ValueError as exc:
            raise Unprocessable(f"Bot/{bot_id} is not a valid Bot: {exc}") from exc
        return LoadedBot(bot, str(stored.version_id))

    async def request(
        self,
        loaded: LoadedBot,
        project: str,
        input: Any,
        *,
        content_type: str = "application/fhir+json",
        requester: str | None = None,
        trace_id: str | None = None,
        idempotency_key: str | None = None,
        causation: tuple[CausationLink, ...] = (),
    ) -> ExecutionRequest:
        """An execution request with the project's secrets."""
        secrets: Mapping[str, str] = (
            await self.secrets.secrets(project) if loaded.bot.secret else {}
        )
        return ExecutionRequest(
            bot=loaded.bot,
            input=input,
            content_type=content_type,
            project=project,
            secrets=dict(secrets),
            trace_id=trace_id,
            requester=requester,
            idempotency_key=idempotency_key,
            causation=causation,
        )

    async def run(
        self,
        request: ExecutionRequest,
        *,
        trigger: ExecutionTrigger,
        bot_version: str | None,
        notification_id: str | None = None,
    ) -> ExecutionResult:
        """Execute, then write the AuditEvent (per the Bot's trigger) and the record.

        A direct call (``trigger="execute"``) is refused when the project's queue is full;
        subscription and cron runs wait their turn.

        Raises:
            ProjectBusyError: a direct call and the project runs its share of the workers
                with a full queue (answered 429 with ``Retry-After``).
            ExecutorError: the executor is closed or its workers cannot start.
        """
        with otel.span(
            "fhirbots.bot run",
            request.trace_id,
            project=request.project,
            bot=request.bot.id or "",
            trigger=trigger,
        ):
            result = await self.executor.execute(request, bounded=trigger == "execute")
        await self.recorder.audit(request, result)
        record = build_record(
            request,
            result,
            trigger=trigger,
            bot_version=bot_version,
            notification_id=notification_id,
        )
        await self.recorder.record(request, record)
        _log.info(
            "bot executed",
            bot=request.bot.reference,
            execution=result.execution_id,
            trigger=trigger,
            status=result.status,
            duration_ms=round(result.duration_ms, 2),
        )
        return result

    async def invoke(
        self, project: str, bot_id: str, notification: Notification, idempotency_key: str
    ) -> BotInvocation:
        """Run ``Bot/<bot_id>`` on a notification (the dispatcher's ``BotInvoker``).

        The input is the notification's resource (read back when the subscription sent none);
        trace and causation chain are the triggering change's. A failed run is a failed
        delivery, which the dispatcher retries under the subscription's policy with the same
        ``idempotency_key``. A bot already in the causation chain is not run (a loop).
        """
        try:
            loaded = await self.load(project, bot_id)
            if loaded.bot.status != "active":
                return BotInvocation(False, f"Bot/{bot_id} is {loaded.bot.status}, not active")
            request = await self.request(
                loaded,
                project,
                await self._input_of(project, notification),
                trace_id=notification.traceparent,
                idempotency_key=idempotency_key,
                causation=notification.causation,
            )
        except FhirError as exc:
            return BotInvocation(False, exc.message)
        if request.loops:
            await self._skip(request, loaded.version)
            return BotInvocation(True, f"skipped: Bot/{bot_id} is already in the causation chain")
        try:
            result = await self.run(
                request,
                trigger="subscription",
                bot_version=loaded.version,
                notification_id=notification.notification_id,
            )
        except ExecutorError as exc:
            return BotInvocation(False, str(exc))
        if result.ok:
            return BotInvocation(True, None)
        return BotInvocation(False, f"{result.status}: {result.error}")

    async def _input_of(self, project: str, notification: Notification) -> Any:
        if notification.resource is not None or notification.interaction == "delete":
            return notification.resource
        try:
            stored = await self.fhir.vread(
                project,
                notification.resource_type,
                notification.resource_id,
                notification.version_id,
            )
        except NotFound:
            return None
        return stored.content

    async def _skip(self, request: ExecutionRequest, version: str) -> None:
        now = datetime.now(UTC)
        _log.warning("bot loop refused", bot=request.bot.reference, chain=len(request.causation))
        await self.recorder.record(
            request,
            BotExecutionRecord(
                execution_id=request.execution_id,
                project=request.project,
                bot=request.bot.reference,
                bot_version=version,
                trigger="subscription",
                status="skipped",
                started=now,
                duration_ms=0.0,
                error="the bot is already in the causation chain of its trigger (a loop)",
                trace_id=request.trace_id,
                idempotency_key=request.idempotency_key,
                causation=request.causation,
            ),
        )

    async def submit(
        self, request: ExecutionRequest, *, trigger: ExecutionTrigger, bot_version: str | None
    ) -> Job:
        """Start an execution in the background and return its job (``respond-async``).

        Raises:
            ProjectBusyError: the project's queue is full (nothing was started).
        """
        self.executor.check_admission(request.project)
        store = await self.store()
        job = Job(
            id=uuid.uuid4().hex,
            project=request.project,
            bot=request.bot.reference,
            state="running",
            result=None,
            created=datetime.now(UTC),
        )
        await store.add_job(job)
        task = asyncio.get_running_loop().create_task(
            self._finish(job, request, trigger, bot_version)
        )
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return job

    async def _finish(
        self,
        job: Job,
        request: ExecutionRequest,
        trigger: ExecutionTrigger,
        bot_version: str | None,
    ) -> None:
        try:
            outcome = result_json(await self.run(request, trigger=trigger, bot_version=bot_version))
        except ExecutorError as exc:
            outcome = {"executionId": request.execution_id, "status": "killed", "error": str(exc)}
        await (await self.store()).finish_job(job.id, outcome, datetime.now(UTC))

    async def job(self, project: str, job_id: str) -> Job | None:
        """An async job of ``project``."""
        return await (await self.store()).get_job(project, job_id)
