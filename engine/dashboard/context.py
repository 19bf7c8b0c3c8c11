"""What a dashboard handler gets from its request: the engine's parts and the caller."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from fhirbots.engine.automation.runtime import BotRuntime
from fhirbots.engine.dashboard.sessions import CSRF_FIELD, CSRF_HEADER, DashboardSession, Sessions
from fhirbots.engine.eventlog.port import EventLog
from fhirbots.engine.fhir.search import SearchService
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.engine.settings import Settings
from fhirbots.engine.stages.dispatcher import Dispatcher
from fhirbots.engine.web.auth import Authenticator, Principal

__all__ = [
    "CALLER",
    "DASHBOARD",
    "SESSION",
    "SESSION_TOKEN",
    "DashboardServices",
    "caller",
    "deps",
    "render",
    "session",
]


@dataclass
class DashboardServices:
    """The engine's parts the dashboard uses.

    Attributes:
        settings: The engine's settings.
        sessions: Sign-in and sessions.
        authenticator: API keys (scripts call the JSON API with one).
        observatory: Statistics and records.
        fhir: The FHIR service (resources, AuditEvents).
        search: The search service.
        event_log: The event log (live tail, event browser), or None before the engine has
            opened one.
        bots: The bot runtime (runs a bot on a sample input, runs an execution again).
        dispatcher: The notification dispatcher (its delivery store: counters, dead letters,
            pending rows; retries and replays), or None in a process that has none.
    """

    settings: Settings
    sessions: Sessions
    authenticator: Authenticator
    observatory: ObservatoryStore
    fhir: FhirService
    search: SearchService
    event_log: Callable[[], EventLog | None]
    bots: BotRuntime
    dispatcher: Callable[[], Dispatcher | None]


DASHBOARD = web.AppKey("dashboard", DashboardServices)
CALLER = web.RequestKey("dashboard_caller", Principal)
SESSION = web.RequestKey("dashboard_session", DashboardSession)
"""Set only for requests a browser session made (not for scripts with a key)."""
SESSION_TOKEN = web.RequestKey("dashboard_session_token", str)


def deps(request: web.Request) -> DashboardServices:
    """The engine's parts."""
    return request.app[DASHBOARD]


def caller(request: web.Request) -> Principal:
    """Who is asking, scoped to the project shown."""
    return request[CALLER]


def session(request: web.Request) -> DashboardSession | None:
    """The browser session of the request, if it came from one."""
    return request.get(SESSION)


def render(
    template: str, request: web.Request, values: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    """A page: ``template`` with ``values`` and what every page sees (the session, its CSRF
    token, the current path, ``asset()`` for versioned static URLs)."""
    signed_in = session(request)
    router = request.app.router

    def asset(name: str) -> str:
        return str(router["static"].url_for(filename=name))

    page = {
        "session": signed_in,
        "csrf": signed_in.csrf if signed_in is not None else "",
        "csrf_field": CSRF_FIELD,
        "csrf_header": CSRF_HEADER,
        "path": request.path,
        "asset": asset,
        **values,
    }
    return aiohttp_jinja2.render_template(template, request, page, status=status)
