"""Dashboard sign-in: an API key, once, turns into a server-side session behind a cookie.

The cookie holds a random token; the store keeps only its SHA-256, with the key's own stored
hash, the project and a CSRF token. Every request re-checks the key (through the
:class:`Authenticator`'s short cache), so deleting a key ends its sessions within seconds, and
signing out deletes the session, so a copied cookie stops working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from fhirbots.engine.errors import Forbidden, Unauthorized
from fhirbots.engine.web.auth import Authenticator, Principal, hash_key

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "DashboardSession",
    "SessionStore",
    "Sessions",
]

SESSION_COOKIE = "fhirbots_session"
"""Name of the session cookie (HttpOnly, SameSite=Strict, Secure over https)."""

CSRF_FIELD = "csrf"
"""Form field that carries the session's CSRF token in every state-changing form."""

CSRF_HEADER = "X-CSRF-Token"
"""Header that carries it in requests made by script (htmx, fetch)."""


@dataclass(frozen=True)
class DashboardSession:
    """A signed-in browser.

    Attributes:
        key_digest: Stored hash of the API key it signed in with (re-checked on every request).
        key_id: Id of that key (AuditEvents name it).
        project: The project shown; an admin key may switch it.
        admin: Whether the key is an admin key.
        csrf: The token every state-changing request must carry.
        expires: When the session ends, whatever happens.
    """

    key_digest: str
    key_id: str
    project: str
    admin: bool
    csrf: str
    expires: datetime

    @property
    def principal(self) -> Principal:
        """The caller as the FHIR API sees it, scoped to the project shown."""
        return Principal(self.key_id, self.project, self.admin)

    def csrf_matches(self, presented: str | None) -> bool:
        """Whether ``presented`` is this session's CSRF token (compared in constant time)."""
        return presented is not None and hmac.compare_digest(presented, self.csrf)


class SessionStore(Protocol):
    """Where sessions live, shared by every API process of a deployment (the observatory
    store is one)."""

    async def put_session(self, token_hash: str, session: str, expires: datetime) -> None:
        """Store (or replace) the session of ``token_hash`` as opaque JSON until ``expires``."""
        ...

    async def get_session(self, token_hash: str) -> str | None:
        """The JSON of the unexpired session of ``token_hash``, or None."""
        ...

    async def delete_session(self, token_hash: str) -> None:
        """Forget the session of ``token_hash`` (no error when there is none)."""
        ...


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _dumps(session: DashboardSession) -> str:
    fields = asdict(session)
    fields["expires"] = session.expires.isoformat()
    return json.dumps(fields)


def _loads(text: str) -> DashboardSession:
    fields = json.loads(text)
    fields["expires"] = datetime.fromisoformat(fields["expires"])
    return DashboardSession(**fields)


class Sessions:
    """Signs in, resumes and ends dashboard sessions.

    Args:
        store: Where sessions are kept.
        authenticator: Checks API keys (and their hashes on every request).
        lifetime: How long a session lasts after sign-in.
    """

    def __init__(
        self, store: SessionStore, authenticator: Authenticator, lifetime: timedelta
    ) -> None:
        self._store = store
        self._authenticator = authenticator
        self._lifetime = lifetime

    async def sign_in(self, api_key: str) -> tuple[str, DashboardSession]:
        """A new session for ``api_key``; returns the cookie token and the session.

        Raises:
            Unauthorized: The key is unknown.
        """
        key = api_key.strip()
        principal = await self._authenticator.authenticate(f"Bearer {key}")
        if principal.scope is not None:  # the dashboard's pages are not checked against scopes
            raise Unauthorized("a scoped API key cannot sign in to the dashboard")
        token = secrets.token_urlsafe(32)
        session = DashboardSession(
            key_digest=hash_key(key),
            key_id=principal.key_id,
            project=principal.project,
            admin=principal.admin,
            csrf=secrets.token_urlsafe(32),
            expires=datetime.now(UTC) + self._lifetime,
        )
        await self._store.put_session(_token_hash(token), _dumps(session), session.expires)
        return token, session

    async def resume(self, token: str | None) -> DashboardSession:
        """The session behind a cookie token.

        Raises:
            Unauthorized: No token, an unknown or expired one, or its key was deleted.
        """
        if not token:
            raise Unauthorized("not signed in")
        stored = await self._store.get_session(_token_hash(token))
        session = _loads(stored) if stored is not None else None
        if session is None or session.expires <= datetime.now(UTC):
            raise Unauthorized("the session has ended; sign in again")
        principal = await self._authenticator.authenticate_digest(session.key_digest)
        if principal is None:
            await self._store.delete_session(_token_hash(token))
            raise Unauthorized("the key of this session no longer exists")
        return session

    async def switch_project(
        self, token: str, session: DashboardSession, project: str
    ) -> DashboardSession:
        """Show another project (admin keys only).

        Raises:
            Forbidden: The key is not an admin key.
        """
        if not session.admin:
            raise Forbidden("only an admin key can switch projects")
        switched = replace(session, project=project)
        await self._store.put_session(_token_hash(token), _dumps(switched), switched.expires)
        return switched

    async def sign_out(self, token: str) -> None:
        """End the session behind ``token``."""
        await self._store.delete_session(_token_hash(token))
