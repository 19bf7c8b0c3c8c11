"""The life of a server process: signals, the management server, tracing, the drain on
SIGTERM.

SIGTERM (what Kubernetes, Docker and systemd send) and SIGINT mark the process not ready at
once, so that probes and load balancers stop sending it work; the command then stops taking
work (the HTTP listener first, then the consumers, which finish and commit the batch in hand)
and closes the engine, all within ``FHIRBOTS_SHUTDOWN_GRACE_SECONDS``. Work not done by then
is not lost: uncommitted records are read again by the group, pending deliveries and outbox
rows stay in their stores.
"""

from __future__ import annotations

import asyncio
import errno
import signal
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import structlog

from fhirbots.engine.observability import otel
from fhirbots.engine.observability.management import ManagementServer
from fhirbots.engine.observability.probes import Readiness
from fhirbots.engine.settings import Settings
from fhirbots.schemas.errors import FhirbotsError

__all__ = ["GRACE_EXCEEDED_STATUS", "Lifecycle", "ListenRefused"]

GRACE_EXCEEDED_STATUS = 1
"""Exit status of a process that did not finish stopping within its grace period."""

log = structlog.get_logger(__name__)


class ListenRefused(FhirbotsError):
    """A listener (the API's, the management port's) could not start; the message names the
    address and, when it is taken, says so (servers do not share ports: no ``reuse_port``)."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        if exc.errno == errno.EADDRINUSE:
            reason = "the address is in use (another fhirbots process, or another program)"
        else:
            reason = exc.strerror or str(exc)
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


class Lifecycle(AbstractAsyncContextManager["Lifecycle"]):
    """Signals and the management server of one server process.

    Entered before anything starts (a SIGTERM during start-up drains too), left when the
    process exits.

    Args:
        settings: The grace period, the management port and host.
        readiness: The process's readiness, drained on the first signal.
        service: The process's name in traces (``fhirbots-serve``, ``fhirbots-matcher``...).
    """

    def __init__(self, settings: Settings, readiness: Readiness, service: str) -> None:
        self.settings = settings
        self.readiness = readiness
        self.service = service
        self.stopping = asyncio.Event()
        self.management: ManagementServer | None = None
        if settings.management_port is not None:
            self.management = ManagementServer(readiness, settings.host, settings.management_port)

    def _signalled(self, sig: signal.Signals) -> None:
        if not self.stopping.is_set():
            log.info("shutdown.requested", signal=sig.name)
        self.readiness.drain()
        self.stopping.set()

    async def __aenter__(self) -> Lifecycle:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signalled, sig)
        otel.configure(self.settings.otlp_endpoint, self.service)
        if self.management is not None:
            try:
                await self.management.start()
            except OSError as exc:
                await self.__aexit__(None, None, None)
                port = self.settings.management_port
                raise ListenRefused(self.settings.host, port or 0, exc) from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.management is not None:
            await self.management.stop()
        await asyncio.to_thread(otel.shutdown)  # the spans still buffered go out
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    async def run_until_stopped(self) -> None:
        """Mark the process ready and wait for SIGTERM or SIGINT."""
        if not self.stopping.is_set():
            self.readiness.running()
        await self.stopping.wait()

    def deadline(self) -> float:
        """The loop time by which stopping must be done (the grace period from now)."""
        return asyncio.get_running_loop().time() + self.settings.shutdown_grace_seconds

    @staticmethod
    async def within(deadline: float, step: Awaitable[None], what: str) -> bool:
        """Await ``step`` until ``deadline``; False (and logged) when it took longer."""
        remaining = max(deadline - asyncio.get_running_loop().time(), 0.0)
        try:
            await asyncio.wait_for(step, remaining)
        except TimeoutError:
            log.error("shutdown.grace_exceeded", step=what)
            return False
        return True
