"""API keys: generated once, shown once, stored as SHA-256 hashes, each scoped to a project.

Keys are 256-bit random secrets, so a plain SHA-256 (not a slow password hash) is the right
choice: it cannot be brute-forced, and a lookup stays a single indexed query.

Every request looks its key up (no cache): the read that authenticates also checks that the
key is not revoked, so a revoked key is refused at once by every API process on the database.
The last-used time is written at most once per :data:`TOUCH_SECONDS` per key and process
(and the statement itself skips a key another process touched within the interval), off the
request's path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from fhirbots.engine.errors import Unauthorized
from fhirbots.engine.fhir.scopes import Scope
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.errors import FhirbotsError

__all__ = [
    "KEY_PREFIX",
    "READ_ONLY",
    "Authenticator",
    "KeyScope",
    "Principal",
    "generate_key",
    "hash_key",
]

log = structlog.get_logger(__name__)

KEY_PREFIX = "fhb_"
"""Marks a fhirbots key, so secret scanners can recognise a leaked one."""

TOUCH_SECONDS = 60.0
"""A key's last-used time is kept to this interval: at most one write per key per interval."""

READ_ONLY = frozenset({"read", "vread", "search", "history"})
"""The interactions of a read-only key."""


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

    def to_json(self) -> str:
        """The stored form: ``{"resourceTypes": [...], "interactions": [...]}`` (a missing
        member: every type, every interaction)."""
        fields: dict[str, list[str]] = {}
        if self.resource_types is not None:
            fields["resourceTypes"] = sorted(self.resource_types)
        if self.interactions is not None:
            fields["interactions"] = sorted(self.interactions)
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> KeyScope | None:
        """The scope stored as ``text`` (None: an unscoped key)."""
        if text is None:
            return None
        fields = json.loads(text)
        types, interactions = fields.get("resourceTypes"), fields.get("interactions")
        return cls(
            None if types is None else frozenset(types),
            None if interactions is None else frozenset(interactions),
        )

    def describe(self) -> str:
        """For listings: ``types=A,B interactions=read,search`` (``all`` when unlimited)."""
        parts = []
        if self.resource_types is not None:
            parts.append("types=" + ",".join(sorted(self.resource_types)))
        if self.interactions is not None:
            parts.append("interactions=" + ",".join(sorted(self.interactions)))
        return " ".join(parts) or "all"


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
        self._touched: dict[str, float] = {}
        self._touching: set[asyncio.Task[None]] = set()

    async def authenticate(self, authorization: str | None) -> Principal:
        """Check the header value; raises :class:`Unauthorized` with the reason."""
        if not authorization:
            raise Unauthorized("missing Authorization header (expected 'Bearer <key>')")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("Authorization must be 'Bearer <key>'")
        principal = await self.authenticate_digest(hash_key(key.strip()))
        if principal is None:
            raise Unauthorized("unknown API key (or a revoked one)")
        return principal

    async def authenticate_digest(self, digest: str) -> Principal | None:
        """The principal of the live key whose stored hash is ``digest``, or None when no such
        key exists (any more) or it is revoked: dashboard sessions re-check their key with it."""
        record = await self._storage.find_api_key(digest)
        if record is None:
            return None
        self._touch(record.id)
        return Principal(record.id, record.project, record.admin, KeyScope.from_json(record.scope))

    def _touch(self, key_id: str) -> None:
        """Record the key's use, at most once per :data:`TOUCH_SECONDS` (in the background)."""
        now = time.monotonic()
        last = self._touched.get(key_id)
        if last is not None and now - last < TOUCH_SECONDS:
            return
        self._touched[key_id] = now
        when = datetime.now(UTC)
        task = asyncio.get_running_loop().create_task(
            self._write_touch(key_id, when, when - timedelta(seconds=TOUCH_SECONDS))
        )
        self._touching.add(task)
        task.add_done_callback(self._touching.discard)

    async def _write_touch(self, key_id: str, when: datetime, unless_after: datetime) -> None:
        try:
            await self._storage.touch_api_key(key_id, when, unless_after)
        except FhirbotsError as exc:  # a lost last-used time is not worth failing a request
            log.warning("api_key.last_used_not_written", key=key_id, error=str(exc))
