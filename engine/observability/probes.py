"""Liveness and readiness of a process, and the HTTP handlers that answer them.

``/livez`` says the process's event loop answers; it never looks at anything else, so an
orchestrator restarts a process only when it is stuck, not when the database is away.
``/readyz`` runs the checks the process registered (its database, its event log, for a
consumer its partition assignment), each bounded by :data:`CHECK_TIMEOUT_SECONDS`, and
answers 503 while the process starts or drains. Both are cheap and unauthenticated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from enum import Enum

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = [
    "CHECK_TIMEOUT_SECONDS",
    "READINESS",
    "Check",
    "Phase",
    "Readiness",
    "livez",
    "metrics",
    "readyz",
]

CHECK_TIMEOUT_SECONDS = 2.0
"""Longest one readiness check may take before it counts as failed (probes time out at a few
seconds; a check that hangs must not make the probe hang)."""

Check = Callable[[], Awaitable[str | None]]
"""A readiness check: None when ready, else why not (it may also raise; that is a failure)."""


class Phase(Enum):
    """Where a process is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    DRAINING = "draining"


class Readiness:
    """The named checks of one process and the phase it is in."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self.phase = Phase.STARTING

    def add(self, name: str, check: Check) -> None:
        """Register (or replace) the check called ``name``."""
        self._checks[name] = check

    def running(self) -> None:
        """The process has started everything its role needs."""
        if self.phase is Phase.STARTING:
            self.phase = Phase.RUNNING

    def drain(self) -> None:
        """The process is shutting down: not ready from now on."""
        self.phase = Phase.DRAINING

    async def _run(self, check: Check) -> str:
        try:
            problem = await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
        except Exception as exc:  # a failing dependency is an answer, not a crash
            return f"{type(exc).__name__}: {exc}"
        return problem or "ok"

    async def report(self) -> tuple[bool, dict[str, object]]:
        """Whether the process is ready, and the body saying why: its phase and each check's
        result (``"ok"`` or the problem)."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(self._checks[n]) for n in names))
        checks = dict(zip(names, results, strict=True))
        ready = self.phase is Phase.RUNNING and all(r == "ok" for r in results)
        body: dict[str, object] = {
            "status": "ready" if ready else "unready",
            "phase": self.phase.value,
            "checks": checks,
        }
        return ready, body


READINESS = web.AppKey("readiness", Readiness)
"""The application's :class:`Readiness` (the API's and the management server's)."""

_STARTED = time.monotonic()


async def livez(_: web.Request) -> web.Response:
    """Liveness: the process answers (nothing else is looked at)."""
    return web.json_response(
        {"status": "ok", "uptime_seconds": round(time.monotonic() - _STARTED, 3)}
    )


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when every check passes and the process runs, else 503; the body names
    each check. An application without a :class:`Readiness` is ready when it answers."""
    readiness = request.app.get(READINESS)
    if readiness is None:
        return web.json_response({"status": "ready", "phase": "running", "checks": {}})
    ready, body = await readiness.report()
    return web.json_response(body, status=200 if ready else 503)


async def metrics(_: web.Request) -> web.Response:
    """Every metric of the process in the Prometheus text format."""
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response
