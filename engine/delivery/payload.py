"""What a notification looks like on the wire.

* R4 criteria subscriptions (no topic): the resource itself when ``channel.payload`` names a
  MIME type, an empty body otherwise (R4 ``Subscription.channel.payload`` semantics).
* Topic-based subscriptions (the Subscriptions Backport IG, R4B resources): a Bundle of type
  ``subscription-notification`` whose first entry is a ``SubscriptionStatus``, followed by the
  focus per content level (``empty``: none; ``id-only``: the reference only;
  ``full-resource``: the resource).

Handshakes, heartbeats and ``$status`` use the same SubscriptionStatus shape.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from fhirbots.engine.delivery.store import Delivery

__all__ = [
    "FHIR_JSON",
    "StatusType",
    "body_for",
    "notification_bundle",
    "status_bundle",
    "subscription_status",
]

FHIR_JSON = "application/fhir+json"
"""MIME type of notification Bundles."""

StatusType = Literal["handshake", "heartbeat", "event-notification", "query-status", "query-event"]
"""SubscriptionStatus.type values."""


def _instant(value: datetime | None = None) -> str:
    return (value or datetime.now(UTC)).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _focus(delivery: Delivery) -> str:
    n = delivery.notification
    return f"{n.resource_type}/{n.resource_id}/_history/{n.version_id}"


def subscription_status(
    *,
    project_subscription: tuple[str, str],
    status: str,
    status_type: StatusType,
    events_since_start: int,
    topic: str | None,
    events: Sequence[Delivery] = (),
    error: str | None = None,
) -> dict[str, Any]:
    """A SubscriptionStatus resource (R4B).

    Args:
        project_subscription: (project, subscription id); only the id is shown.
        status: The Subscription's status (``active``, ``error``...).
        status_type: Why the status is sent.
        events_since_start: The subscription's latest event number.
        topic: Canonical of its SubscriptionTopic, if topic-based.
        events: Notifications to list in ``notificationEvent``.
        error: An error to report, if any.
    """
    resource: dict[str, Any] = {
        "resourceType": "SubscriptionStatus",
        "status": status,
        "type": status_type,
        "eventsSinceSubscriptionStart": str(events_since_start),
        "subscription": {"reference": f"Subscription/{project_subscription[1]}"},
    }
    if topic:
        resource["topic"] = topic
    if events:
        resource["notificationEvent"] = [
            {
                "eventNumber": str(d.event_number),
                "timestamp": _instant(d.notification.time),
                "focus": {"reference": _focus(d)},
            }
            for d in events
        ]
    if error:
        resource["error"] = [{"text": error}]
    return resource


def _entry(delivery: Delivery, base_url: str) -> dict[str, Any] | None:
    n = delivery.notification
    content = n.channel.content
    if content == "empty":
        return None
    url = f"{n.resource_type}/{n.resource_id}"
    entry: dict[str, Any] = {"fullUrl": f"{base_url.rstrip('/')}/{url}"}
    if content == "full-resource" and n.resource is not None and n.interaction != "delete":
        entry["resource"] = n.resource
    method = {"create": "POST", "update": "PUT", "delete": "DELETE"}[n.interaction]
    entry["request"] = {"method": method, "url": url if method != "POST" else n.resource_type}
    return entry


def status_bundle(status: dict[str, Any], entries: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A ``subscription-notification`` Bundle: the status first, then ``entries``."""
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "subscription-notification",
        "timestamp": _instant(),
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": status}, *entries],
    }


def notification_bundle(
    deliveries: Sequence[Delivery],
    *,
    status: str,
    events_since_start: int,
    base_url: str,
    status_type: StatusType = "event-notification",
) -> dict[str, Any]:
    """The notification Bundle of one or more notifications of one subscription."""
    first = deliveries[0].notification
    resource = subscription_status(
        project_subscription=(first.project, first.subscription_id),
        status=status,
        status_type=status_type,
        events_since_start=events_since_start,
        topic=first.topic,
        events=deliveries,
    )
    entries = [e for e in (_entry(d, base_url) for d in deliveries) if e is not None]
    return status_bundle(resource, entries)


def body_for(delivery: Delivery, *, status: str, base_url: str) -> tuple[bytes, str | None]:
    """The request body of a rest-hook delivery and its content type (None when empty)."""
    n = delivery.notification
    if n.topic is None:
        if not n.channel.payload or n.resource is None:
            return b"", None
        return orjson.dumps(n.resource), n.channel.payload
    bundle = notification_bundle(
        [delivery],
        status=status,
        events_since_start=delivery.event_number,
        base_url=base_url,
    )
    return orjson.dumps(bundle), FHIR_JSON
