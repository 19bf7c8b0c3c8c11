"""API keys: generated once, shown once, stored as SHA-256 hashes, each scoped to a project.

Keys are 256-bit random secrets, so a plain SHA-256 (not a slow password hash) is the right
choice: it cannot be brute-forced, and a lookup stays a single indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from fhirbots.engine.errors import Unauthorized
from fhirbots.engine.fhir.scopes import Scope
from fhirbots.engine.storage.model import ApiKeyRecord
from fhirbots.engine.storage.port import Storage

__all__ = ["KEY_PREFIX", "Authenticator", "KeyScope", "Principal", "generate_key", "hash_key"]

KEY_PREFIX = "fhb_"
"""Marks a fhirbots key, so secret scanners can recognise a leaked one."""

CACHE_SECONDS = 30.0
"""How long a looked-up key is trusted without asking the database again."""


@dataclass(frozen=True)
class KeyScope:
    """What a scoped key may do inside its project.

    Attributes:
        resource_types: The types it may touch; None for every type.
        interactions: The interactions it may use (``read``, ``search``, ``create`` ...); None
            for every interaction.
    """

    resource_types: frozenset[str] | None = None
    interactions: frozenset[str] | None = None

    def allows(self, resource_type: str, interaction: str) -> bool:
        """Whether the key may use ``interaction`` on ``resource_type`` (``*``: every type)."""
        if self.interactions is not None and interaction not in self.interactions:
            return False
        if self.resource_types is None:
            return True
        return resource_type != "*" and resource_type in self.resource_types


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key, the project it is scoped to and, for a scoped key, its scope."""

    key_id: str
    project: str
    admin: bool
    scope: KeyScope | None = None
    """None: the key may do anything inside its project."""

    @property
    def author(self) -> str:
        """How change events name this caller."""
        return f"ApiKey/{self.key_id}"

    def search_scope(self) -> Scope | None:
        """What the key's searches may return or test (:mod:`fhirbots.engine.fhir.scopes`)."""
        if self.scope is None:
            return None
        return Scope(self.author, self.scope.allows)


def generate_key() -> str:
    """A new secret API key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    """Resolves ``Authorization: Bearer <key>`` to a :class:`Principal`."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._cache: dict[str, tuple[float, ApiKeyRecord]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """Check the header value; raises :class:`Unauthorized` with the reason."""
        if not authorization:
            raise Unauthorized("missing Authorization header (expected 'Bearer <key>')")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("Authorization must be 'Bearer <key>'")
        principal = await self.authenticate_digest(hash_key(key.strip()))
        if principal is None:
            raise Unauthorized("unknown API key")
        return principal

    async def authenticate_digest(self, digest: str) -> Principal | None:
        """The principal of the key whose stored hash is ``digest``, or None when no such key
        exists (any more): dashboard sessions re-check their key with it."""
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            record = cached[1]
        else:
            found = await self._storage.find_api_key(digest)
            if found is None:
                self._cache.pop(digest, None)
                return None
            record = found
            self._cache[digest] = (now, record)
        return Principal(record.id, record.project, record.admin)
