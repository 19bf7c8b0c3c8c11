"""The port through which the engine performs a bot's FHIR calls.

A bot's ``fhir.read(...)`` travels from its worker to the engine, which checks the bot's
access scopes (:mod:`fhirbots.bots.scopes`) and then calls a :class:`FhirGateway`. The engine
provides the real adapter (its datastore, inside the bot's project);
:class:`fhirbots.bots.testing.InMemoryFhirGateway` is a dict-backed one for tests and bot authors.

Gateways raise :class:`fhirbots.bots.errors.FhirGatewayError` for failures the bot should see (not
found, invalid, conflict); the bot receives them as a ``FhirError`` it can catch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fhirbots.schemas.events import CausationLink

__all__ = ["CallContext", "FhirGateway"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """On whose behalf, and within which execution, a FHIR call is made."""

    project: str
    """Project the bot belongs to; every call stays inside it."""
    bot: str
    """``Bot/<id>`` of the calling bot (for the causation chain of resulting changes)."""
    execution_id: str
    """Id of the execution making the call."""
    author: str
    """Identity the call is made as: the bot, or the triggering author when ``runAs=author``."""
    requester: str | None = None
    """Who triggered the execution, if known."""
    trace_id: str | None = None
    """W3C traceparent of the triggering request or change."""
    idempotency_key: str | None = None
    """Key of the triggering delivery; lets the gateway deduplicate writes of a retry."""
    causation: tuple[CausationLink, ...] = ()
    """Causation chain to record on changes this call makes: the triggering change's chain
    followed by this execution (oldest first). Lets the engine stop bot loops."""
    deadline: float | None = None
    """When the execution ends (its timeout), on the ``time.monotonic()`` clock, which all
    processes of a host share: a write of this call that has not committed by then must not
    commit (the engine's gateway hands it to the datastore, which rolls back)."""
    allows: Callable[[str, str], bool] | None = None
    """The bot's access scopes, ``(resource type, interaction) -> bool``; None when unlimited.
    The engine judges by it everything a search returns or tests (includes, chains, ``_has``),
    beyond the call's own type that :mod:`fhirbots.bots.scopes` checks."""


class FhirGateway(Protocol):
    """FHIR interactions, on plain dicts, performed for a bot."""

    async def read(self, ctx: CallContext, resource_type: str, resource_id: str) -> dict[str, Any]:
        """Return the current version of a resource."""
        ...

    async def create(self, ctx: CallContext, resource: dict[str, Any]) -> dict[str, Any]:
        """Create a resource and return it as stored."""
        ...

    async def update(self, ctx: CallContext, resource: dict[str, Any]) -> dict[str, Any]:
        """Update (or create with its id) a resource and return it as stored."""
        ...

    async def patch(
        self, ctx: CallContext, resource_type: str, resource_id: str, patch: list[Any]
    ) -> dict[str, Any]:
        """Apply a JSON Patch and return the patched resource."""
        ...

    async def delete(self, ctx: CallContext, resource_type: str, resource_id: str) -> None:
        """Delete a resource."""
        ...

    async def search(
        self, ctx: CallContext, resource_type: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Search and return a ``searchset`` Bundle."""
        ...

    async def transaction(self, ctx: CallContext, bundle: dict[str, Any]) -> dict[str, Any]:
        """Run a ``transaction`` or ``batch`` Bundle and return the response Bundle."""
        ...
