"""The Subscription resources the dispatcher delivers for, read from the datastore and cached.

Delivery settings (secret, attempts, success codes...) are read here at delivery time rather
than carried on topics, so secrets never travel through the event log. An entry is reloaded
when a notification names a newer Subscription version, or after :data:`CACHE_SECONDS`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from fhirbots.engine.delivery.policy import DeliveryDefaults, DeliveryPolicy, policy_for
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.notifications import ChannelSpec

__all__ = [
    "BACKPORT_CONTENT_URL",
    "CACHE_SECONDS",
    "STALE_SECONDS",
    "SubscriptionInfo",
    "SubscriptionRegistry",
    "channel_spec",
    "topic_of",
]

CACHE_SECONDS = 5.0
"""How long a Subscription is trusted without re-reading it: bounds how long a change made
in another process (say, a status set to ``off``) takes to reach this dispatcher."""

STALE_SECONDS = 60.0
"""Beyond this age a cached entry is not used at all (the read waits for the datastore)."""


@dataclass(frozen=True)
class SubscriptionInfo:
    """A Subscription as the dispatcher uses it."""

    resource: dict[str, Any]
    version: int
    policy: DeliveryPolicy

    @property
    def status(self) -> str:
        """``requested``, ``active``, ``error`` or ``off``."""
        return str(self.resource.get("status", "active"))


class SubscriptionRegistry:
    """Cached reads of Subscription resources.

    Args:
        storage: The datastore.
        defaults: Engine-wide delivery defaults.
    """

    def __init__(self, storage: Storage, defaults: DeliveryDefaults) -> None:
        self.storage = storage
        self._defaults = defaults
        self._cache: dict[tuple[str, str], tuple[float, SubscriptionInfo | None]] = {}
        self._refreshing: dict[tuple[str, str], asyncio.Task[SubscriptionInfo | None]] = {}

    async def get(
        self, project: str, subscription_id: str, *, min_version: int = 0
    ) -> SubscriptionInfo | None:
        """The Subscription (None if absent or deleted), at least ``min_version``.

        An entry older than :data:`CACHE_SECONDS` is still answered from the cache (up to
        :data:`STALE_SECONDS`) while it is re-read in the background, so a lane never waits
        for the datastore on the hot path.
        """
        key = (project, subscription_id)
        cached = self._cache.get(key)
        if cached is not None:
            age = time.monotonic() - cached[0]
            info = cached[1]
            if info is None or info.version >= min_version:
                if age < CACHE_SECONDS:
                    return info
                if age < STALE_SECONDS:
                    self._refresh_later(key)
                    return info
        return await self._load(key)

    async def _load(self, key: tuple[str, str]) -> SubscriptionInfo | None:
        stored = await self.storage.read(key[0], "Subscription", key[1])
        found: SubscriptionInfo | None = None
        if stored is not None and not stored.deleted and stored.content is not None:
            found = SubscriptionInfo(
                stored.content, stored.version_id, policy_for(stored.content, self._defaults)
            )
        self._cache[key] = (time.monotonic(), found)
        return found

    def _refresh_later(self, key: tuple[str, str]) -> None:
        if key in self._refreshing:
            return
        task = asyncio.create_task(self._load(key))
        self._refreshing[key] = task
        task.add_done_callback(lambda _: self._refreshing.pop(key, None))

    def remember(self, project: str, info: SubscriptionInfo) -> None:
        """Cache a version this process just wrote."""
        subscription_id = str(info.resource.get("id"))
        self._cache[(project, subscription_id)] = (time.monotonic(), info)

    def forget(self, project: str, subscription_id: str) -> None:
        """Drop a cached entry (the next get reads the datastore)."""
        self._cache.pop((project, subscription_id), None)


BACKPORT_CONTENT_URL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
)
"""Backport IG: content level of a topic-based subscription, on ``channel._payload``."""


def topic_of(subscription: dict[str, Any]) -> str | None:
    """The SubscriptionTopic canonical of a topic-based (Backport IG) Subscription, or None."""
    criteria = str(subscription.get("criteria") or "")
    if criteria.startswith(("http://", "https://", "urn:")) and "?" not in criteria:
        return criteria.split("|", 1)[0]
    return None


def channel_spec(subscription: dict[str, Any]) -> ChannelSpec:
    """The channel of a Subscription resource, as notifications carry it."""
    channel = subscription.get("channel") or {}
    kind = channel.get("type", "rest-hook")
    if kind not in ("rest-hook", "websocket", "message", "email"):
        kind = "rest-hook"
    # The matcher's defaults: the resource when a payload type is named (or for a bot).
    endpoint = channel.get("endpoint")
    content = (
        "full-resource" if channel.get("payload") or str(endpoint).startswith("Bot/") else "empty"
    )
    for ext in (channel.get("_payload") or {}).get("extension") or ():
        if ext.get("url") == BACKPORT_CONTENT_URL and ext.get("valueCode") in (
            "empty",
            "id-only",
            "full-resource",
        ):
            content = ext["valueCode"]
    return ChannelSpec(
        type=kind,
        endpoint=endpoint,
        payload=channel.get("payload"),
        content=content,
        headers=tuple(h for h in channel.get("header") or () if isinstance(h, str)),
    )
