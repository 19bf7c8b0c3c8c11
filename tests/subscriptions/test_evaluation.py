"""Every criteria form and parameter type, evaluated on Synthea resources."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fhirbots.schemas.events import ChangeEvent
from fhirbots.subscriptions.definitions import parse_subscription, parse_topic
from fhirbots.subscriptions.evaluation import evaluate
from fhirbots.subscriptions.model import CRITERIA_ERROR_URL, SubscriptionSpec, Topic

SHARED = Path(
    os.environ.get("FHIRBOTS_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared")
)
FHIRPATH_URL = "https://medplum.com/fhir/StructureDefinition/fhir-path-criteria-expression"
INTERACTION_URL = "https://medplum.com/fhir/StructureDefinition/subscription-supported-interaction"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def _resolve(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """The bundle's resources with urn:uuid references turned into Type/id (as the server)."""
    ids = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['fullUrl'].rsplit(':', 1)[-1]}"
        for e in bundle["entry"]
    }
    text = json.dumps([e["resource"] for e in bundle["entry"]])
    for urn, ref in ids.items():
        text = text.replace(f'"{urn}"', f'"{ref}"')
    resources: list[dict[str, Any]] = json.loads(text)
    for entry, resource in zip(bundle["entry"], resources, strict=True):
        resource["id"] = entry["fullUrl"].rsplit(":", 1)[-1]
    return resources


@cache
def synthea(count: int = 2) -> tuple[dict[str, Any], ...]:
    """Resources of the first ``count`` Synthea bundles (references resolved)."""
    files = sorted((SHARED / "fhir-samples" / "synthea-r4").glob("*.json"))[:count]
    out: list[dict[str, Any]] = []
    for file in files:
        out.extend(_resolve(json.loads(file.read_text())))
    return tuple(out)


def first(resource_type: str, **where: Any) -> dict[str, Any]:
    """The first Synthea resource of a type (whose top-level fields equal ``where``)."""
    for resource in synthea():
        if resource["resourceType"] == resource_type and all(
            resource.get(k) == v for k, v in where.items()
        ):
            return resource
    raise LookupError(resource_type)


def event(
    resource: dict[str, Any] | None,
    interaction: str = "create",
    previous: dict[str, Any] | None = None,
    **extra: Any,
) -> ChangeEvent:
    subject = resource or previous
    assert subject is not None
    return ChangeEvent(
        event_id=str(uuid.uuid4()),
        project="p1",
        interaction=interaction,
        resource_type=subject["resourceType"],
        resource_id=subject.get("id", "x"),
        version_id="2",
        resource=resource,
        previous=previous,
        time=datetime(2026, 1, 1, tzinfo=UTC),
        **extra,
    )


def subscription(criteria: str, sub_id: str = "s1", **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "id": sub_id,
        "meta": {"versionId": "1"},
        "status": "active",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
        **fields,
    }


def spec(criteria: str, topics: dict[str, Topic] | None = None, **fields: Any) -> SubscriptionSpec:
    return parse_subscription(subscription(criteria, **fields), topics or {})


def fires(criteria: str, change: ChangeEvent, **fields: Any) -> bool:
    return evaluate(spec(criteria, **fields), change, {}).fires


def test_token_with_and_without_system() -> None:
    obs = first("Observation")
    code = obs["code"]["coding"][0]
    assert fires(f"Observation?code={code['system']}|{code['code']}", event(obs))
    assert fires(f"Observation?code={code['code']}", event(obs))
    assert not fires(f"Observation?code=http://snomed.info/sct|{code['code']}", event(obs))
    assert not fires("Observation?code=0000-0", event(obs))
    assert fires(f"Observation?code=0000-0,{code['code']}", event(obs))  # OR


def test_token_modifiers_not_and_text() -> None:
    obs = first("Observation")
    assert fires("Observation?status:not=preliminary", event(obs))
    assert not fires(f"Observation?status:not={obs['status']}", event(obs))
    text = obs["code"]["text"][:4].lower()
    assert fires(f"Observation?code:text={text}", event(obs))


def test_reference_forms() -> None:
    obs = first("Observation")
    patient_id = obs["subject"]["reference"].split("/")[1]
    assert fires(f"Observation?subject=Patient/{patient_id}", event(obs))
    assert fires(f"Observation?patient={patient_id}", event(obs))
    assert fires(f"Observation?subject:Patient={patient_id}", event(obs))
    assert not fires("Observation?subject=Patient/someone-else", event(obs))


def test_date_prefixes() -> None:
    obs = first("Observation")
    day = obs["effectiveDateTime"][:10]
    year = int(day[:4])
    assert fires(f"Observation?date={day}", event(obs))
    assert fires(f"Observation?date=ge{year}", event(obs))
    assert fires(f"Observation?date=lt{year + 1}", event(obs))
    assert not fires(f"Observation?date=gt{year + 1}", event(obs))
    assert not fires(f"Observation?date=lt{year}", event(obs))
    assert fires(f"Observation?date=ge{year - 1}&date=le{year + 1}", event(obs))  # AND


def test_string_default_exact_contains() -> None:
    patient = first("Patient")
    family = patient["name"][0]["family"]
    assert fires(f"Patient?family={family[:3].lower()}", event(patient))
    assert fires(f"Patient?family:exact={family}", event(patient))
    assert not fires(f"Patient?family:exact={family.lower()}", event(patient))
    assert fires(f"Patient?family:contains={family[1:4]}", event(patient))
    assert not fires("Patient?family=zzzz", event(patient))


def test_quantity_with_units() -> None:
    obs = next(
        r
        for r in synthea()
        if r["resourceType"] == "Observation" and r.get("valueQuantity", {}).get("code") == "cm"
    )
    value = obs["valueQuantity"]["value"]
    ucum = "http://unitsofmeasure.org"
    assert fires(f"Observation?value-quantity=gt{value - 1}|{ucum}|cm", event(obs))
    assert not fires(f"Observation?value-quantity=gt{value + 1}|{ucum}|cm", event(obs))
    assert not fires(f"Observation?value-quantity=gt{value - 1}|{ucum}|kg", event(obs))
    assert fires(f"Observation?value-quantity=ap{round(value)}", event(obs))


def test_number() -> None:
    risk = {
        "resourceType": "RiskAssessment",
        "id": "r1",
        "status": "final",
        "subject": {"reference": "Patient/p"},
        "prediction": [{"probabilityDecimal": 0.42}],
    }
    assert fires("RiskAssessment?probability=gt0.4", event(risk))
    assert fires("RiskAssessment?probability=0.42", event(risk))
    assert not fires("RiskAssessment?probability=lt0.4", event(risk))


def test_uri_and_missing() -> None:
    patient = {**first("Patient"), "meta": {"profile": ["http://example.org/fhir/Patient/v2"]}}
    assert fires("Patient?_profile=http://example.org/fhir/Patient/v2", event(patient))
    assert fires("Patient?_profile:below=http://example.org/fhir", event(patient))
    assert not fires("Patient?_profile=http://example.org/other", event(patient))
    obs = first("Observation")
    has_value = "valueQuantity" in obs
    assert fires(
        f"Observation?value-quantity:missing={'false' if has_value else 'true'}", event(obs)
    )
    assert fires("Observation?value-string:missing=true", event(obs))


def test_id_and_tag() -> None:
    obs = first("Observation")
    assert fires(f"Observation?_id={obs['id']}", event(obs))
    assert not fires("Observation?_id=other", event(obs))
    assert fires("Observation?_tag=https://smarthealthit.org/tags|synthea-5-2019", event(obs))


def test_type_only_and_wrong_type() -> None:
    obs = first("Observation")
    assert fires("Observation", event(obs))
    assert not fires("Patient", event(obs))


def test_interactions_default_create_update_delete_only_when_asked() -> None:
    obs = first("Observation")
    assert fires("Observation", event(obs, "create"))
    assert fires("Observation", event(obs, "update", previous=obs))
    assert not fires("Observation", event(None, "delete", previous=obs))
    delete_only = {"extension": [{"url": INTERACTION_URL, "valueCode": "delete"}]}
    assert fires("Observation", event(None, "delete", previous=obs), **delete_only)
    assert not fires("Observation", event(obs, "create"), **delete_only)
    both = {
        "extension": [
            {"url": INTERACTION_URL, "valueCode": "create"},
            {"url": INTERACTION_URL, "valueCode": "delete"},
        ]
    }
    assert fires("Observation", event(obs, "create"), **both)
    assert fires("Observation", event(None, "delete", previous=obs), **both)
    assert not fires("Observation", event(obs, "update", previous=obs), **both)


def test_delete_criteria_apply_to_the_deleted_version() -> None:
    obs = first("Observation")
    code = obs["code"]["coding"][0]["code"]
    on_delete = {"extension": [{"url": INTERACTION_URL, "valueCode": "delete"}]}
    assert fires(f"Observation?code={code}", event(None, "delete", previous=obs), **on_delete)
    assert not fires("Observation?code=0000-0", event(None, "delete", previous=obs), **on_delete)


def test_fhirpath_previous_and_current() -> None:
    enc = first("Encounter")
    finished = {**enc, "status": "finished"}
    planned = {**enc, "status": "planned"}
    expression = "%previous.status != 'finished' and %current.status = 'finished'"
    extension = {"extension": [{"url": FHIRPATH_URL, "valueString": expression}]}
    assert fires("Encounter", event(finished, "update", previous=planned), **extension)
    assert not fires("Encounter", event(finished, "update", previous=finished), **extension)
    assert not fires("Encounter", event(planned, "update", previous=finished), **extension)
    # %previous is {} on create: its status is empty, so the comparison is empty, not true.
    assert not fires("Encounter", event(finished, "create"), **extension)
    created = {"extension": [{"url": FHIRPATH_URL, "valueString": "%previous.id.empty()"}]}
    assert fires("Encounter", event(finished, "create"), **created)


def test_fhirpath_and_criteria_both_hold() -> None:
    obs = first("Observation")
    ext = {"extension": [{"url": FHIRPATH_URL, "valueString": "status = 'final'"}]}
    assert fires("Observation", event(obs), **ext)
    assert not fires("Observation?code=0000-0", event(obs), **ext)


def test_fhirpath_runtime_error_is_a_value() -> None:
    obs = first("Observation", status="final")
    # foo() is unknown, but only reached for final resources: the dry run at definition
    # time cannot see it, so it fails when an event reaches it.
    expression = "iif(status = 'final', status.foo(), false)"
    ext: dict[str, Any] = {"extension": [{"url": FHIRPATH_URL, "valueString": expression}]}
    verdict = evaluate(spec("Observation", **ext), event(obs), {})
    assert not verdict.fires
    assert verdict.error is not None and "foo" in verdict.error


def test_status_and_end() -> None:
    obs = first("Observation")
    assert not fires("Observation", event(obs), status="off")
    assert not fires("Observation", event(obs), status="requested")
    assert fires("Observation", event(obs), status="error")  # delivery failing: keeps firing
    criteria_failed = [{"url": CRITERIA_ERROR_URL, "valueBoolean": True}]
    assert not fires("Observation", event(obs), status="error", extension=criteria_failed)
    assert not fires("Observation", event(obs), end="2025-12-31T00:00:00Z")
    assert fires("Observation", event(obs), end="2026-12-31T00:00:00Z")
    assert not fires("Observation", event(obs), end="2025-12-31")  # no zone: read as UTC


def test_changes_committed_before_the_subscription_do_not_fire_it() -> None:
    obs = first("Observation")  # the test events are committed at 2026-01-01T00:00:00Z
    later = {"versionId": "1", "lastUpdated": "2026-01-01T00:00:01Z"}
    earlier = {"versionId": "1", "lastUpdated": "2025-12-31T23:59:59Z"}
    assert not fires("Observation", event(obs), meta=later)
    assert fires("Observation", event(obs), meta=earlier)


# --- topic-based subscriptions (Subscriptions Backport IG) -----------------------------

ENC_TOPIC = "http://example.org/topics/encounter-finished"


def topic(**trigger: Any) -> Topic:
    resource = {
        "resourceType": "SubscriptionTopic",
        "id": "t1",
        "url": ENC_TOPIC,
        "status": "active",
        "resourceTrigger": [{"resource": "Encounter", **trigger}],
        "canFilterBy": [
            {"resource": "Encounter", "filterParameter": "patient"},
            {"resource": "Encounter", "filterParameter": "class"},
        ],
    }
    return parse_topic(resource)


def topic_fires(t: Topic, change: ChangeEvent, filters: tuple[str, ...] = ()) -> bool:
    fields: dict[str, Any] = {}
    if filters:
        url = BACKPORT + "backport-filter-criteria"
        fields["_criteria"] = {"extension": [{"url": url, "valueString": f} for f in filters]}
    s = spec(ENC_TOPIC, topics={t.url: t}, **fields)
    return evaluate(s, change, {t.url: t}).fires


def test_topic_query_criteria_previous_current() -> None:
    enc = first("Encounter")
    planned, finished = {**enc, "status": "planned"}, {**enc, "status": "finished"}
    t = topic(
        supportedInteraction=["create", "update"],
        queryCriteria={
            "previous": "Encounter?status:not=finished",
            "resultForCreate": "test-passes",
            "current": "Encounter?status=finished",
            "resultForDelete": "test-fails",
            "requireBoth": True,
        },
    )
    assert topic_fires(t, event(finished, "update", previous=planned))
    assert not topic_fires(t, event(finished, "update", previous=finished))
    assert not topic_fires(t, event(planned, "update", previous=planned))
    assert topic_fires(t, event(finished, "create"))  # resultForCreate passes
    assert not topic_fires(t, event(planned, "create"))
    assert not topic_fires(t, event(None, "delete", previous=finished))  # not supported


def test_topic_require_both_false_is_either() -> None:
    enc = first("Encounter")
    planned, finished = {**enc, "status": "planned"}, {**enc, "status": "finished"}
    t = topic(
        queryCriteria={
            "previous": "status=planned",
            "current": "status=finished",
            "requireBoth": False,
        }
    )
    assert topic_fires(t, event(finished, "update", previous=planned))
    assert topic_fires(t, event(planned, "update", previous=planned))  # previous passes
    assert topic_fires(t, event(finished, "update", previous=finished))  # current passes
    arrived = {**enc, "status": "arrived"}
    assert not topic_fires(t, event(arrived, "update", previous=arrived))
    assert not topic_fires(t, event(arrived, "create"))  # resultForCreate defaults to fail


def test_topic_result_for_delete() -> None:
    enc = first("Encounter")
    finished = {**enc, "status": "finished"}
    passes = topic(queryCriteria={"current": "status=finished", "resultForDelete": "test-passes"})
    fails = topic(queryCriteria={"current": "status=finished", "resultForDelete": "test-fails"})
    assert topic_fires(passes, event(None, "delete", previous=finished))
    assert not topic_fires(fails, event(None, "delete", previous=finished))


def test_topic_fhirpath_criteria_and_filters() -> None:
    enc = first("Encounter")
    patient = enc["subject"]["reference"]
    t = topic(fhirPathCriteria="%current.status = 'finished' and %previous.status != 'finished'")
    planned, finished = {**enc, "status": "planned"}, {**enc, "status": "finished"}
    change = event(finished, "update", previous=planned)
    assert topic_fires(t, change)
    assert topic_fires(t, change, (f"Encounter?patient={patient}",))
    assert not topic_fires(t, change, ("Encounter?patient=Patient/other",))
    cls = enc["class"]["code"]
    assert topic_fires(t, change, (f"Encounter?patient={patient}", f"Encounter?class={cls}"))
    assert not topic_fires(t, change, (f"Encounter?patient={patient}", "Encounter?class=XYZ"))
    assert not topic_fires(t, event(finished, "update", previous=finished))


def test_topic_ignores_other_types_and_retired() -> None:
    t = topic()
    assert not topic_fires(t, event(first("Observation")))
    retired = parse_topic(
        {
            "resourceType": "SubscriptionTopic",
            "url": ENC_TOPIC,
            "status": "retired",
            "resourceTrigger": [{"resource": "Encounter"}],
        }
    )
    assert not topic_fires(retired, event(first("Encounter")))


def test_explain_values_name_the_failed_clause() -> None:
    obs = first("Observation")
    verdict = evaluate(spec("Observation?status=final&code=0000-0"), event(obs), {}, explain=True)
    assert not verdict.fires
    assert verdict.failed is not None and "code" in verdict.failed
    assert any(obs["code"]["coding"][0]["code"] in v for v in verdict.values)
