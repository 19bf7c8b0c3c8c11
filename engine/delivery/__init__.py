"""Notification delivery: the dispatcher stage and its channels.

:class:`Dispatcher` reads ``fhir.notifications.v1``, gives each notification its
subscription's next event number in a :class:`DeliveryStore`, and delivers it on its channel
(rest-hook, websocket, message, ``Bot/<id>``) with per-subscription order, retries, dead
letters and the topic-based protocol (handshake, heartbeats). See ``docs/delivery.md``.
"""

from __future__ import annotations

from engine.delivery.attempt import AttemptResult
from engine.delivery.bot import BotInvocation, BotInvoker
from engine.delivery.dispatcher import Dispatcher
from engine.delivery.errors import (
    DeliveryError,
    DeliveryStoreError,
    EndpointRefused,
)
from engine.delivery.factory import create_delivery_store, defaults_from, open_dispatcher
from engine.delivery.policy import Backoff, DeliveryDefaults, DeliveryPolicy, SuccessCodes
from engine.delivery.safety import EndpointGuard
from engine.delivery.store import Accepted, Delivery, DeliveryStore, SubscriptionCounters
from engine.delivery.store_sqlite import SqliteDeliveryStore
from engine.delivery.websocket import WebSocketHub

__all__ = [
    "Accepted",
    "AttemptResult",
    "Backoff",
    "BotInvocation",
    "BotInvoker",
    "Delivery",
    "DeliveryDefaults",
    "DeliveryError",
    "DeliveryPolicy",
    "DeliveryStore",
    "DeliveryStoreError",
    "Dispatcher",
    "EndpointGuard",
    "EndpointRefused",
    "SqliteDeliveryStore",
    "SubscriptionCounters",
    "SuccessCodes",
    "WebSocketHub",
    "create_delivery_store",
    "defaults_from",
    "open_dispatcher",
]
