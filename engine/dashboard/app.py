"""The dashboard application, mounted at ``/dashboard`` of the engine's HTTP server.

Pages are rendered on the server (Jinja2); htmx swaps parts of them and Server-Sent Events
feed the live views. Every page reads a JSON API under ``/dashboard/api/``, usable from
scripts with ``Authorization: Bearer <key>``. A browser signs in once with an API key and then
carries a session cookie; every state-changing request it makes must carry the session's CSRF
token (form field ``csrf`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp_jinja2
import jinja2
from aiohttp import web

from fhirbots.engine.dashboard import pages, tail
from fhirbots.engine.dashboard.context import (
    CALLER,
    DASHBOARD,
    SESSION,
    SESSION_TOKEN,
    DashboardServices,
    render,
)
from fhirbots.engine.dashboard.executions import outcome_of
from fhirbots.engine.dashboard.sessions import CSRF_FIELD, CSRF_HEADER, SESSION_COOKIE
from fhirbots.engine.errors import FhirError, Forbidden, Unauthorized

__all__ = ["MOUNT", "create_dashboard"]

MOUNT = "/dashboard"
"""Where the dashboard is mounted on the engine's HTTP server."""

_HERE = Path(__file__).parent
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_OPEN = frozenset({"/login"})
"""Paths (below the mount) served without a session."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _relative(request: web.Request) -> str:
    return request.path.removeprefix(MOUNT) or "/"


def _is_api(request: web.Request) -> bool:
    return _relative(request).startswith("/api/")


def _error_response(request: web.Request, status: int, message: str) -> web.StreamResponse:
    if _is_api(request):
        return web.json_response({"error": message, "status": status}, status=status)
    return render("error.html", request, {"status": status, "message": message}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors become an HTML page (or JSON under ``/api/``), never a FHIR OperationOutcome."""
    try:
        return await handler(request)
    except FhirError as exc:
        return _error_response(request, exc.status, str(exc))
    except web.HTTPNotFound:
        return _error_response(request, 404, f"no page at {request.path}")


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking: a Bearer key (scripts) or a session cookie (browsers, with CSRF)."""
    relative = _relative(request)
    if relative in _OPEN or relative.startswith("/static/"):
        return await handler(request)
    deps = request.app[DASHBOARD]
    authorization = request.headers.get("Authorization")
    if authorization and _is_api(request):
        # A script holds its key itself: no ambient credential, so no CSRF to fear.
        request[CALLER] = await deps.authenticator.authenticate(authorization)
        return await handler(request)
    token = request.cookies.get(SESSION_COOKIE)
    try:
        signed_in = await deps.sessions.resume(token)
    except Unauthorized:
        if _is_api(request):
            raise
        target = quote(request.path_qs, safe="")
        raise web.HTTPSeeOther(f"{MOUNT}/login?next={target}") from None
    if request.method not in _SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER)
        if presented is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            presented = str((await request.post()).get(CSRF_FIELD, "")) or None
        if not signed_in.csrf_matches(presented):
            raise Forbidden("missing or wrong CSRF token; reload the page and try again")
    request[SESSION] = signed_in
    request[SESSION_TOKEN] = token or ""
    request[CALLER] = signed_in.principal
    return await handler(request)


def create_dashboard(deps: DashboardServices) -> web.Application:
    """The dashboard as an aiohttp sub-application (mount it at :data:`MOUNT`)."""
    app = web.Application(middlewares=[errors_middleware, session_middleware])
    app[DASHBOARD] = deps
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    env.globals["mount"] = MOUNT
    # A run's outcome named as the executions list names it, wherever a page shows one.
    env.filters["outcome"] = outcome_of
    app.router.add_static("/static/", _HERE / "static", name="static", append_version=True)
    app.add_routes(pages.routes())
    tail.install(app)  # one tailer per process, stopped on shutdown
    return app
