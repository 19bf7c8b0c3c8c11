"""Parsing Subscriptions and SubscriptionTopics: what is accepted and what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbots.subscriptions.definitions import criteria_warnings, parse_subscription, parse_topic
from fhirbots.subscriptions.errors import CriteriaError
from tests.subscriptions.test_evaluation import (
    BACKPORT,
    ENC_TOPIC,
    FHIRPATH_URL,
    INTERACTION_URL,
    subscription,
    topic,
)

CONTENT_URL = BACKPORT + "backport-payload-content"


def refused(resource: dict[str, Any], topics: dict[str, Any] | None = None) -> CriteriaError:
    with pytest.raises(CriteriaError) as caught:
        parse_subscription(resource, topics or {})
    return caught.value


@pytest.mark.parametrize(
    ("criteria", "named"),
    [
        ("Observation?foo=1", "foo"),
        ("Observation?code:in=http://x/vs", "ValueSet 'http://x/vs' is not stored"),
        ("Observation?date=xx2020", "date"),
        ("Observation?value-quantity=zz5", "value-quantity"),
        ("Observation?subject.name=smith", "subject.name"),
        ("Patient?_has:Observation:subject:code=1234", "_has"),
        ("NotAType?x=1", "NotAType"),
        ("?_id=1", "no resource type"),
    ],
)
def test_criteria_the_engine_cannot_evaluate_are_refused(criteria: str, named: str) -> None:
    error = refused(subscription(criteria))
    assert error.expression == "Subscription.criteria"
    assert named in error.message


@pytest.mark.parametrize(
    "shaping",
    [
        "_sort=-date",
        "_count=10",
        "_summary=true",
        "_elements=status",
        "_total=accurate",
        "_include=Observation:subject",
        "_revinclude=Provenance:target",
    ],
)
def test_result_parameters_are_accepted_and_ignored_with_a_warning(shaping: str) -> None:
    spec = parse_subscription(subscription(f"Observation?status=final&{shaping}"), {})
    assert spec.criteria is not None
    assert [c.name for c in spec.criteria.query.clauses] == ["status"]
    plain = parse_subscription(subscription("Observation?status=final"), {}).criteria
    assert plain is not None and spec.criteria.query == plain.query
    assert len(spec.warnings) == 1
    assert shaping in spec.warnings[0] and "ignored" in spec.warnings[0]


def test_criteria_warnings_without_parsing() -> None:
    resource = subscription("Observation?status=final&_count=5&_include=Observation:subject")
    warnings = criteria_warnings(resource)
    assert len(warnings) == 2 and all("Subscription.criteria" in w for w in warnings)
    assert criteria_warnings(subscription("Observation?status=final")) == ()
    assert criteria_warnings({"resourceType": "Patient"}) == ()


def test_only_result_parameters_leave_a_criterion_on_the_type() -> None:
    spec = parse_subscription(subscription("Observation?_count=1&_sort=date"), {})
    assert spec.criteria is not None and spec.criteria.query.clauses == ()
    assert spec.criteria.resource_type == "Observation"
    assert len(spec.warnings) == 2


def test_bad_fhirpath_refused_with_its_element() -> None:
    for expression in ["status = ", "a b c", "status.unknownFunction()", ""]:
        error = refused(
            subscription(
                "Observation", extension=[{"url": FHIRPATH_URL, "valueString": expression}]
            )
        )
        assert error.expression is not None and "fhir-path-criteria" in error.expression


def test_bad_interaction_status_channel_refused() -> None:
    ext = [{"url": INTERACTION_URL, "valueCode": "read"}]
    assert "read" in refused(subscription("Patient", extension=ext)).message
    assert refused(subscription("Patient", status="paused")).expression == "Subscription.status"
    sms = subscription("Patient", channel={"type": "sms", "endpoint": "tel:1"})
    assert refused(sms).expression == "Subscription.channel.type"


def test_unknown_topic_refused() -> None:
    error = refused(subscription("http://example.org/topics/nope"))
    assert "unknown SubscriptionTopic" in error.message


def test_filter_not_in_can_filter_by_refused() -> None:
    t = topic()
    url = BACKPORT + "backport-filter-criteria"
    bad = subscription(
        ENC_TOPIC, _criteria={"extension": [{"url": url, "valueString": "Encounter?status=x"}]}
    )
    error = refused(bad, {t.url: t})
    assert "status" in error.message and "canFilterBy" in error.message
    ok = subscription(
        ENC_TOPIC, _criteria={"extension": [{"url": url, "valueString": "patient=Patient/1"}]}
    )
    parsed = parse_subscription(ok, {t.url: t})
    assert parsed.topic_url == ENC_TOPIC
    assert [f.resource_type for f in parsed.filters] == ["Encounter"]


def test_medplum_subscription_parses_unchanged() -> None:
    resource = subscription(
        "Observation?code=http://loinc.org|8867-4",
        extension=[
            {"url": FHIRPATH_URL, "valueString": "%previous.status != %current.status"},
            {"url": INTERACTION_URL, "valueCode": "create"},
            {"url": INTERACTION_URL, "valueCode": "delete"},
        ],
        channel={"type": "rest-hook", "endpoint": "Bot/123"},
    )
    parsed = parse_subscription(resource, {})
    assert parsed.interactions == {"create", "delete"}
    assert parsed.fhirpath == "%previous.status != %current.status"
    assert parsed.bot == "Bot/123"
    assert parsed.channel.content == "full-resource"


def test_backport_channel_settings() -> None:
    t = topic()
    resource = subscription(
        ENC_TOPIC + "|1.0",
        channel={
            "type": "rest-hook",
            "endpoint": "https://127.0.0.1/hook",
            "payload": "application/fhir+json",
            "_payload": {
                "extension": [
                    {"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}
                ]
            },
            "extension": [
                {"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 60},
                {"url": BACKPORT + "backport-timeout", "valueUnsignedInt": 30},
                {"url": BACKPORT + "backport-max-count", "valuePositiveInt": 20},
            ],
        },
    )
    parsed = parse_subscription(resource, {t.url: t})
    assert parsed.topic_url == ENC_TOPIC
    channel = parsed.channel
    assert (channel.content, channel.heartbeat_period, channel.timeout, channel.max_count) == (
        "id-only",
        60,
        30,
        20,
    )


def test_content_defaults() -> None:
    assert parse_subscription(subscription("Patient"), {}).channel.content == "empty"
    with_payload = subscription(
        "Patient",
        channel={"type": "rest-hook", "endpoint": "http://h", "payload": "application/fhir+json"},
    )
    assert parse_subscription(with_payload, {}).channel.content == "full-resource"


@pytest.mark.parametrize(
    ("change", "element"),
    [
        ({"url": None}, "SubscriptionTopic.url"),
        ({"eventTrigger": [{"event": {"text": "x"}, "resource": "Encounter"}]}, "eventTrigger"),
        ({"resourceTrigger": [{"resource": "Nope"}]}, "resourceTrigger[0].resource"),
        (
            {"resourceTrigger": [{"resource": "Encounter", "queryCriteria": {"current": "x=1"}}]},
            "queryCriteria.current",
        ),
        (
            {"resourceTrigger": [{"resource": "Encounter", "fhirPathCriteria": "a b"}]},
            "fhirPathCriteria",
        ),
        (
            {"resourceTrigger": [{"resource": "Encounter", "supportedInteraction": ["read"]}]},
            "supportedInteraction",
        ),
        ({"canFilterBy": [{"resource": "Encounter", "filterParameter": "nope"}]}, "canFilterBy"),
        ({"resourceTrigger": []}, "resourceTrigger"),
    ],
)
def test_topics_the_engine_cannot_evaluate_are_refused(
    change: dict[str, Any], element: str
) -> None:
    resource = {
        "resourceType": "SubscriptionTopic",
        "url": ENC_TOPIC,
        "status": "active",
        "resourceTrigger": [{"resource": "Encounter"}],
        **change,
    }
    with pytest.raises(CriteriaError) as caught:
        parse_topic(resource)
    assert caught.value.expression is not None and element in caught.value.expression


def test_topic_defaults() -> None:
    t = parse_topic(
        {
            "resourceType": "SubscriptionTopic",
            "url": ENC_TOPIC,
            "status": "active",
            "resourceTrigger": [{"resource": "http://hl7.org/fhir/StructureDefinition/Encounter"}],
        }
    )
    trigger = t.triggers[0]
    assert trigger.resource_type == "Encounter"
    assert trigger.interactions == {"create", "update", "delete"}
    assert (trigger.result_for_create, trigger.result_for_delete) == (False, False)
