"""The management HTTP server of a process: ``/livez``, ``/readyz`` and ``/metrics`` on a port
of their own, unauthenticated (``fhirbots worker ROLE --management-port N``, or
``FHIRBOTS_MANAGEMENT_PORT`` for any server command).

Workers have no API port, so this is where probes and Prometheus reach them; ``serve`` may
run one too, to scrape metrics without an API key. Nothing here reads or changes data.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from fhirbots.engine.observability.probes import READINESS, Readiness, livez, metrics, readyz

__all__ = ["ManagementServer", "management_app"]

log = structlog.get_logger(__name__)


def management_app(readiness: Readiness) -> web.Application:
    """The management application answering for ``readiness``."""
    app = web.Application()
    app[READINESS] = readiness
    app.router.add_get("/livez", livez)
    app.router.add_get("/healthz", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class ManagementServer:
    """The management application listening on ``host:port``.

    Args:
        readiness: What ``/readyz`` reports.
        host: Interface to listen on.
        port: Port to listen on (0 picks a free one; :attr:`port` tells which).
    """

    def __init__(self, readiness: Readiness, host: str, port: int) -> None:
        self._runner = web.AppRunner(management_app(readiness), access_log=None)
        self._host = host
        self.port = port

    async def start(self) -> None:
        """Listen (the probes answer from here on, ``/readyz`` with 503 until running)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        for sock in sockets:
            self.port = int(sock.getsockname()[1])
            break
        log.info("management.listening", host=self._host, port=self.port)

    async def stop(self) -> None:
        """Stop listening."""
        await self._runner.cleanup()
