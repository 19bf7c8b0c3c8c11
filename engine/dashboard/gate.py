"""Dashboard pages calling the FHIR API with their session instead of a key.

A request to the FHIR API that carries the session cookie *and* the session's CSRF token in
the ``X-CSRF-Token`` header acts as the key the session signed in with, scoped to the project
shown. The cookie alone is not enough (a page of another site can make the browser send it, but
cannot read the token), so such a request is simply unauthenticated. Every request but a read
made this way is recorded as an AuditEvent naming the key.
"""

from __future__ import annotations

from aiohttp import web

from fhirbots.engine.dashboard.audit import Action, audit_action
from fhirbots.engine.dashboard.sessions import CSRF_HEADER, SESSION_COOKIE, Sessions
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.web.auth import Principal

__all__ = ["SessionGate"]

_ACTIONS: dict[str, Action] = {"POST": "C", "PUT": "U", "PATCH": "U", "DELETE": "D"}


class SessionGate:
    """:class:`fhirbots.engine.api.app.BrowserCredentials` backed by dashboard sessions."""

    def __init__(self, sessions: Sessions, fhir: FhirService) -> None:
        self._sessions = sessions
        self._fhir = fhir

    async def principal(self, request: web.Request) -> Principal | None:
        """The session's caller, when the request carries the cookie and its CSRF token."""
        token = request.cookies.get(SESSION_COOKIE)
        presented = request.headers.get(CSRF_HEADER)
        if not token or not presented:
            return None
        session = await self._sessions.resume(token)
        if not session.csrf_matches(presented):
            return None
        return session.principal

    async def audit(self, request: web.Request, caller: Principal, status: int) -> None:
        """An AuditEvent for a call that was not a read."""
        operation = "$" in request.path
        await audit_action(
            self._fhir,
            caller,
            "api-call",
            f"{request.method} {request.path} answered {status}",
            action="E" if operation else _ACTIONS.get(request.method, "E"),
            success=status < 400,
        )
