"""The websocket channel: short-lived binding tokens and the sockets bound with them.

A client asks ``Subscription/<id>/$get-ws-binding-token`` for a token, opens the websocket
URL that came with it and sends ``bind-with-token <token>`` (Subscriptions Backport IG). It
then receives a handshake Bundle and, as text frames, every notification Bundle of that
subscription.

A token is single-use (:meth:`WebSocketHub.claim` removes it) and bound to the project and
the key that asked for it: a socket can only bind tokens issued to the key it was opened with
(see :mod:`fhirbots.engine.operations.delivery`).

Notifications sent while no client is bound are not queued: a client catches up with
``Subscription/<id>/$events`` from the last event number it saw.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

__all__ = ["DEFAULT_TOKEN_TTL", "Binding", "WebSocketHub"]

DEFAULT_TOKEN_TTL = 60.0
"""Seconds a binding token can be used: long enough to open a socket, short enough that a
leaked token is soon useless."""


@dataclass(frozen=True)
class Binding:
    """What a token binds to."""

    project: str
    subscription_id: str
    expires_at: float
    key_id: str = ""
    """The API key that asked for the token."""

    @property
    def owner(self) -> tuple[str, str]:
        """(project, key) the token was issued to."""
        return self.project, self.key_id


class WebSocketHub:
    """Tokens and bound sockets of this process.

    Args:
        token_ttl: Seconds a token stays valid.
    """

    def __init__(self, token_ttl: float = DEFAULT_TOKEN_TTL) -> None:
        self.token_ttl = token_ttl
        self._tokens: dict[str, Binding] = {}
        self._sockets: dict[tuple[str, str], set[web.WebSocketResponse]] = {}

    def issue_token(
        self, project: str, subscription_id: str, key_id: str = ""
    ) -> tuple[str, Binding]:
        """A new token for ``subscription_id``, asked for by ``key_id``, and what it binds to."""
        now = time.time()
        self._tokens = {t: b for t, b in self._tokens.items() if b.expires_at > now}
        token = secrets.token_urlsafe(24)
        binding = Binding(project, subscription_id, now + self.token_ttl, key_id)
        self._tokens[token] = binding
        return token, binding

    def claim(self, token: str) -> Binding | None:
        """The binding of a valid, unexpired token, which can never be claimed again."""
        binding = self._tokens.pop(token, None)
        if binding is None or binding.expires_at <= time.time():
            return None
        return binding

    def bind(self, binding: Binding, socket: web.WebSocketResponse) -> None:
        """Send ``binding``'s notifications to ``socket`` from now on."""
        key = (binding.project, binding.subscription_id)
        self._sockets.setdefault(key, set()).add(socket)

    def unbind(self, socket: web.WebSocketResponse) -> None:
        """Stop sending to ``socket``."""
        for key in list(self._sockets):
            sockets = self._sockets[key]
            sockets.discard(socket)
            if not sockets:
                del self._sockets[key]

    def bound(self, project: str, subscription_id: str) -> int:
        """How many sockets are bound to the subscription."""
        return len(self._sockets.get((project, subscription_id), ()))

    async def send(self, project: str, subscription_id: str, text: str) -> int:
        """Send ``text`` to every socket bound to the subscription; returns how many got it."""
        sockets = list(self._sockets.get((project, subscription_id), ()))
        sent = 0
        for socket in sockets:
            if socket.closed:
                self.unbind(socket)
                continue
            try:
                await socket.send_str(text)
                sent += 1
            except (ConnectionError, RuntimeError):
                self.unbind(socket)
        return sent

    async def close(self) -> None:
        """Close every bound socket."""
        sockets = {s for group in self._sockets.values() for s in group}
        self._sockets.clear()
        await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
