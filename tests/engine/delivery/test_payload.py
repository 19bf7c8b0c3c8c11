"""Wire formats: R4 criteria bodies and topic-based notification Bundles (validated)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from fhirbots.engine.delivery.payload import (
    body_for,
    notification_bundle,
    status_bundle,
    subscription_status,
)
from fhirbots.engine.delivery.store import Delivery
from fhirbots.schemas.notifications import ChannelSpec, ContentLevel, Notification
from fhirbots.schemas.validation import validate_resource


def _delivery(
    content: ContentLevel = "id-only", topic: str | None = None, **kw: object
) -> Delivery:
    now = datetime.now(UTC)
    n = Notification(
        notification_id="n1",
        project="p1",
        subscription_id="s1",
        subscription_version="1",
        topic=topic,
        event_id="e1",
        interaction=kw.pop("interaction", "update"),
        resource_type="Encounter",
        resource_id="enc1",
        version_id="3",
        resource={
            "resourceType": "Encounter",
            "id": "enc1",
            "status": "finished",
            "class": {"code": "AMB"},
        },
        time=now,
        channel=ChannelSpec(content=content, payload=kw.pop("payload", None)),
    )
    return Delivery(n, 7, "pending", 0, 0.0, None, now, now)


def test_r4_criteria_body_is_resource_or_empty() -> None:
    body, kind = body_for(_delivery(payload="application/fhir+json"), status="active", base_url="x")
    assert orjson.loads(body)["id"] == "enc1" and kind == "application/fhir+json"
    assert body_for(_delivery(), status="active", base_url="x") == (b"", None)


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_topic_bundle_per_content_level(content: ContentLevel) -> None:
    topic = "http://example.org/topics/encounter-end"
    body, kind = body_for(
        _delivery(content, topic=topic), status="active", base_url="https://h/fhir/R4"
    )
    bundle = orjson.loads(body)
    assert kind == "application/fhir+json"
    validate_resource(bundle)
    assert bundle["type"] == "subscription-notification"
    status = bundle["entry"][0]["resource"]
    assert status["resourceType"] == "SubscriptionStatus"
    assert status["type"] == "event-notification" and status["topic"] == topic
    assert status["eventsSinceSubscriptionStart"] == "7"
    (event,) = status["notificationEvent"]
    assert event["eventNumber"] == "7"
    assert event["focus"]["reference"] == "Encounter/enc1/_history/3"
    rest = bundle["entry"][1:]
    if content == "empty":
        assert rest == []
    else:
        (entry,) = rest
        assert entry["fullUrl"] == "https://h/fhir/R4/Encounter/enc1"
        assert ("resource" in entry) == (content == "full-resource")


def test_delete_has_no_resource() -> None:
    bundle = notification_bundle(
        [_delivery("full-resource", topic="urn:t", interaction="delete")],
        status="active",
        events_since_start=7,
        base_url="https://h",
    )
    (entry,) = bundle["entry"][1:]
    assert "resource" not in entry and entry["request"]["method"] == "DELETE"


def test_handshake_bundle_validates() -> None:
    status = subscription_status(
        project_subscription=("p1", "s1"),
        status="requested",
        status_type="handshake",
        events_since_start=0,
        topic="urn:t",
        error="x",
    )
    bundle = status_bundle(status)
    validate_resource(bundle)
    assert len(bundle["entry"]) == 1
