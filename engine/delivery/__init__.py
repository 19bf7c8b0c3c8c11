"""Notification delivery: the channels, the delivery store and the policy the dispatcher uses.

The dispatcher stage itself (:mod:`fhirbots.engine.stages.dispatcher`) reads
``fhir.notifications.v1``, gives each notification its subscription's next event number in a
:class:`DeliveryStore`, and delivers it on its channel (rest-hook, websocket, message,
``Bot/<id>``) with per-subscription order, retries, dead letters and the topic-based protocol
(handshake, heartbeats). See ``docs/delivery.md``.
"""

from __future__ import annotations

from fhirbots.engine.delivery.attempt import AttemptResult
from fhirbots.engine.delivery.bot import BotInvocation, BotInvoker
from fhirbots.engine.delivery.errors import (
    DeliveryError,
    DeliveryStoreError,
    EndpointRefused,
)
from fhirbots.engine.delivery.factory import create_delivery_store, defaults_from
from fhirbots.engine.delivery.policy import Backoff, DeliveryDefaults, DeliveryPolicy, SuccessCodes
from fhirbots.engine.delivery.safety import EndpointGuard
from fhirbots.engine.delivery.store import Accepted, Delivery, DeliveryStore, SubscriptionCounters
from fhirbots.engine.delivery.store_sqlite import SqliteDeliveryStore
from fhirbots.engine.delivery.websocket import WebSocketHub

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
    "EndpointGuard",
    "EndpointRefused",
    "SqliteDeliveryStore",
    "SubscriptionCounters",
    "SuccessCodes",
    "WebSocketHub",
    "create_delivery_store",
    "defaults_from",
]
