"""Sign-in, sign-out, project switching, and the routes of every dashboard view."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web

from fhirbots.engine.dashboard import (
    bots,
    events,
    executions,
    overview,
    subscription_actions,
    subscription_form,
    subscriptions,
    tail,
    trace,
)
from fhirbots.engine.dashboard.audit import audit_action
from fhirbots.engine.dashboard.context import SESSION_TOKEN, caller, deps, render, session
from fhirbots.engine.dashboard.sessions import SESSION_COOKIE
from fhirbots.engine.errors import BadRequest, Unauthorized

__all__ = ["routes"]

_MOUNT = "/dashboard"


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path of the dashboard itself (no open redirect)."""
    if not target:
        return f"{_MOUNT}/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{_MOUNT}/"):
        return f"{_MOUNT}/"
    return target


async def login_form(request: web.Request) -> web.Response:
    """The sign-in form."""
    return render("login.html", request, {"next": _safe_next(request.query.get("next"))})


async def login(request: web.Request) -> web.StreamResponse:
    """Sign in with an API key: a session cookie, then the page asked for."""
    form = await request.post()
    target = _safe_next(str(form.get("next", "")))
    key = str(form.get("key", ""))
    dashboard = deps(request)
    try:
        token, signed_in = await dashboard.sessions.sign_in(key)
    except Unauthorized as exc:
        return render("login.html", request, {"next": target, "error": str(exc)}, status=401)
    await audit_action(dashboard.fhir, signed_in.principal, "sign-in", "signed in")
    response = web.HTTPSeeOther(target)
    lifetime = int((signed_in.expires - datetime.now(UTC)).total_seconds())
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(lifetime, 0),
        # The whole site: pages of the dashboard call the FHIR API with it (see gate.py).
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_is_https(request),
    )
    raise response


def _is_https(request: web.Request) -> bool:
    """Whether the browser reached us over https (directly or through a proxy that says so)."""
    if request.secure:
        return True
    public = deps(request).settings.public_url or ""
    return public.startswith("https://")


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session (the CSRF token was checked by the middleware)."""
    dashboard = deps(request)
    await audit_action(dashboard.fhir, caller(request), "sign-out", "signed out")
    await dashboard.sessions.sign_out(request[SESSION_TOKEN])
    response = web.HTTPSeeOther(f"{_MOUNT}/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def switch_project(request: web.Request) -> web.StreamResponse:
    """Show another project (admin keys only)."""
    form = await request.post()
    project = str(form.get("project", "")).strip()
    if not project:
        raise BadRequest("name a project")
    signed_in = session(request)
    if signed_in is None:
        raise BadRequest("switching projects is for browser sessions")
    dashboard = deps(request)
    switched = await dashboard.sessions.switch_project(request[SESSION_TOKEN], signed_in, project)
    await audit_action(
        dashboard.fhir, switched.principal, "switch-project", f"switched to project {project}"
    )
    raise web.HTTPSeeOther(f"{_MOUNT}/")


def routes() -> list[web.RouteDef]:
    """Every route of the dashboard (below its mount point)."""
    return [
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.post("/project", switch_project),
        *overview.routes(),
        # The form's page before one Subscription's: ``/subscriptions/new`` is not an id.
        *subscription_form.routes(),
        *subscriptions.routes(),
        *subscription_actions.routes(),
        *bots.routes(),
        *executions.routes(),
        *tail.routes(),
        *events.routes(),
        *trace.routes(),
    ]
