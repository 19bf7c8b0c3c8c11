"""Cron schedules of Bots (``Bot.cronString``): each tick runs once, however many processes.

Every process running a :class:`CronScheduler` wakes at the start of each minute (UTC), finds
the active Bots whose schedule matches that minute, and *claims* each (bot, tick) in the bot
store. The claim is a row insert under a primary key, so exactly one process wins and runs the
bot; the others skip it. A bot runs with ``input=None`` and the idempotency key
``cron:Bot/<id>:<tick>``. A process that is down during a minute does not catch up on it
later: a missed tick is missed, as with cron.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog

from fhirbots.bots.cron import CronSchedule
from fhirbots.bots.errors import CronError, ExecutorError
from fhirbots.bots.executor import ExecutionRequest, ExecutionResult
from fhirbots.engine.automation.loaded import LoadedBot
from fhirbots.engine.automation.store import BotStore
from fhirbots.engine.errors import FhirError
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.executions import ExecutionTrigger

__all__ = ["CLAIM_RETENTION", "BotRunner", "CronScheduler"]

CLAIM_RETENTION = timedelta(days=1)
"""Claims older than this are purged (hourly); a day is ample to debug a double run."""

Clock = Callable[[], datetime]

_log = structlog.get_logger(__name__)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class BotRunner(Protocol):
    """What the scheduler needs of the bot runtime: load a Bot, prepare a run, run it.

    :class:`fhirbots.engine.automation.runtime.BotRuntime` satisfies it; the runtime builds
    the scheduler, so the scheduler names only this port, never the runtime.
    """

    async def load(self, project: str, bot_id: str) -> LoadedBot:
        """The current version of ``Bot/<bot_id>`` in ``project``.

        Raises:
            FhirError: no such Bot, or it no longer validates.
        """
        ...

    async def request(
        self,
        loaded: LoadedBot,
        project: str,
        input: Any,
        *,
        idempotency_key: str | None = None,
    ) -> ExecutionRequest:
        """An execution request for ``loaded``, with the project's secrets."""
        ...

    async def run(
        self, request: ExecutionRequest, *, trigger: ExecutionTrigger, bot_version: str | None
    ) -> ExecutionResult:
        """Execute and record the execution.

        Raises:
            ExecutorError: the executor is closed or its workers cannot start.
        """
        ...


class CronScheduler:
    """Runs cron-scheduled Bots of every project.

    Args:
        runtime: Loads, executes and records the bots (the engine's bot runtime).
        storage: The datastore (to list Bots).
        store: The bot store holding the claims.
        owner: Name of this process in claim rows (``host:pid`` by default).
        clock: Current time (UTC); tests pass a fixed one.
    """

    def __init__(
        self,
        runtime: BotRunner,
        storage: Storage,
        store: BotStore,
        *,
        owner: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._runtime = runtime
        self._storage = storage
        self._store = store
        self.owner = owner or _default_owner()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._task: asyncio.Task[None] | None = None
        self._ticks: set[asyncio.Task[int]] = set()

    def start(self) -> None:
        """Run in the background until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop waking up; cancel ticks still running."""
        tasks = [t for t in (self._task, *self._ticks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None

    async def _loop(self) -> None:
        while True:
            now = self._clock()
            tick = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
            await asyncio.sleep(max(0.0, (tick - now).total_seconds()))
            task = asyncio.get_running_loop().create_task(self.run_tick(tick))
            self._ticks.add(task)
            task.add_done_callback(self._ticks.discard)

    async def due(self, tick: datetime) -> list[tuple[str, LoadedBot]]:
        """The active Bots whose schedule fires at ``tick``, as ``(project, bot)``."""
        found: list[tuple[str, LoadedBot]] = []
        # Every live Bot of every project: a handful of rows, read once per minute.
        for project, bot_id in await self._storage.current_ids_everywhere("Bot"):
            try:
                loaded = await self._runtime.load(str(project), str(bot_id))
                cron = loaded.bot.cron_string
                if loaded.bot.status != "active" or not cron:
                    continue
                if CronSchedule.parse(cron).matches(tick):
                    found.append((str(project), loaded))
            except (FhirError, CronError) as exc:
                _log.warning("bot schedule skipped", bot=f"Bot/{bot_id}", error=str(exc))
        return found

    async def run_tick(self, tick: datetime) -> int:
        """Run every due Bot this process claims at ``tick``; returns how many it ran."""
        tick = tick.astimezone(UTC).replace(second=0, microsecond=0)
        if tick.minute == 0:
            await self._store.purge_claims(tick - CLAIM_RETENTION)
        runs = []
        for project, loaded in await self.due(tick):
            if await self._store.claim_tick(project, loaded.bot.reference, tick, self.owner):
                runs.append(self._run(project, loaded, tick))
        results = await asyncio.gather(*runs, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                _log.error("cron run failed", error=repr(result))
        return len(runs)

    async def _run(self, project: str, loaded: LoadedBot, tick: datetime) -> None:
        stamp = tick.isoformat().replace("+00:00", "Z")
        request = await self._runtime.request(
            loaded, project, None, idempotency_key=f"cron:{loaded.bot.reference}:{stamp}"
        )
        try:
            await self._runtime.run(request, trigger="cron", bot_version=loaded.version)
        except ExecutorError as exc:
            _log.error("cron run not started", bot=loaded.bot.reference, error=str(exc))
