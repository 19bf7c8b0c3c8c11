"""Sends one notification on its channel: rest-hook, websocket, message or ``Bot/<id>``."""

from __future__ import annotations

import orjson

from fhirbots.engine.delivery.attempt import AttemptResult
from fhirbots.engine.delivery.bot import BotInvoker, bot_id_of
from fhirbots.engine.delivery.message import MessageChannel
from fhirbots.engine.delivery.payload import body_for, notification_bundle
from fhirbots.engine.delivery.resthook import (
    HEADER_EVENT_NUMBER,
    HEADER_NOTIFICATION_ID,
    HEADER_SUBSCRIPTION,
    RestHookChannel,
)
from fhirbots.engine.delivery.store import Delivery
from fhirbots.engine.delivery.subscriptions import SubscriptionInfo
from fhirbots.engine.delivery.websocket import WebSocketHub
from fhirbots.engine.observability import otel
from fhirbots.engine.observability.tracing import TRACEPARENT, child_traceparent
from fhirbots.schemas.deliveries import DeliveryChannel

__all__ = ["Sender", "channel_name"]


def channel_name(delivery: Delivery) -> DeliveryChannel:
    """``bot``, ``rest-hook``, ``websocket``, ``message`` or ``email`` (for logs, metrics)."""
    channel = delivery.notification.channel
    return "bot" if bot_id_of(channel.endpoint) else channel.type


class Sender:
    """Routes a notification to the channel it names.

    Args:
        resthook: The HTTP channel.
        base_url: Base of ``fullUrl`` in notification Bundles.
        message: The event-log channel, if the dispatcher has an event log.
        hub: Bound websockets of this process, if it serves the API.
        bots: Runs ``Bot/<id>`` endpoints, once the bots integration provides one.
    """

    def __init__(
        self,
        resthook: RestHookChannel,
        *,
        base_url: str,
        message: MessageChannel | None = None,
        hub: WebSocketHub | None = None,
        bots: BotInvoker | None = None,
    ) -> None:
        self.resthook = resthook
        self.base_url = base_url
        self.message = message
        self.hub = hub
        self.bots = bots

    def _bundle(self, delivery: Delivery, info: SubscriptionInfo) -> bytes:
        bundle = notification_bundle(
            [delivery],
            status=info.status,
            events_since_start=delivery.event_number,
            base_url=self.base_url,
        )
        return orjson.dumps(bundle)

    @staticmethod
    def headers(delivery: Delivery) -> dict[str, str]:
        """Trace, event number, subscription and notification id headers."""
        n = delivery.notification
        return {
            TRACEPARENT: child_traceparent(n.traceparent),
            HEADER_EVENT_NUMBER: str(delivery.event_number),
            HEADER_SUBSCRIPTION: n.subscription_id,
            HEADER_NOTIFICATION_ID: n.notification_id,
        }

    async def send(self, delivery: Delivery, info: SubscriptionInfo) -> AttemptResult:
        """One attempt; failures are results, not exceptions."""
        n = delivery.notification
        with otel.span(
            "fhirbots.delivery attempt",
            n.traceparent,
            subscription=n.subscription_id,
            channel=n.channel.type,
            event_number=delivery.event_number,
        ):
            return await self._send(delivery, info)

    async def _send(self, delivery: Delivery, info: SubscriptionInfo) -> AttemptResult:
        n = delivery.notification
        channel = n.channel
        bot_id = bot_id_of(channel.endpoint)
        if bot_id is not None:
            if self.bots is None:
                return AttemptResult(False, error="no bot executor is configured")
            key = f"{n.project}/{n.subscription_id}:{delivery.event_number}"
            outcome = await self.bots.invoke(n.project, bot_id, n, key)
            return AttemptResult(
                outcome.success, error=None if outcome.success else outcome.message
            )
        if channel.type == "rest-hook":
            if not channel.endpoint:
                return AttemptResult(False, error="rest-hook without endpoint", retryable=False)
            body, content_type = body_for(delivery, status=info.status, base_url=self.base_url)
            return await self.resthook.send(
                channel.endpoint,
                body,
                content_type=content_type,
                policy=info.policy,
                headers=self.headers(delivery),
            )
        if channel.type == "websocket":
            if self.hub is None:
                return AttemptResult(False, error="websockets are served by another process")
            await self.hub.send(n.project, n.subscription_id, self._bundle(delivery, info).decode())
            return AttemptResult(True)
        if channel.type == "message":
            if self.message is None or not channel.endpoint:
                return AttemptResult(False, error="message channel without topic", retryable=False)
            return await self.message.send(
                n.project,
                channel.endpoint,
                n.key,
                self._bundle(delivery, info),
                self.headers(delivery),
            )
        return AttemptResult(
            False, error=f"channel {channel.type!r} is not supported", retryable=False
        )
