"""Tests of in-memory matching, with examples from the R4 search page and Synthea data."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbots.subscriptions.search import (
    NotSupportedInMemoryError,
    check_in_memory,
    matches,
    parse_search,
)

NOW_US = 1_750_000_000 * 1_000_000  # 2025-06-15

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "example",
    "meta": {
        "lastUpdated": "2024-03-01T10:00:00Z",
        "tag": [{"system": "http://example.org/tags", "code": "vip"}],
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
        "security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
        ],
    },
    "identifier": [
        {
            "use": "usual",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ],
                "text": "Medical record number",
            },
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": "12345",
        }
    ],
    "active": True,
    "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
    "telecom": [
        {"system": "phone", "value": "(03) 5555 6473", "use": "work"},
        {"system": "email", "value": "p.chalmers@example.org"},
    ],
    "gender": "male",
    "birthDate": "1974-12-25",
    "address": [{"line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}],
    "managingOrganization": {"reference": "Organization/1"},
    "generalPractitioner": [{"identifier": {"system": "http://npi", "value": "77"}}],
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obs1",
    "status": "final",
    "code": {
        "coding": [
            {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
            {"system": "http://snomed.info/sct", "code": "364075005"},
        ],
        "text": "Heart rate",
    },
    "subject": {"reference": "Patient/example"},
    "effectivePeriod": {"start": "2020-01-15T08:00:00Z", "end": "2020-01-15T09:00:00Z"},
    "valueQuantity": {
        "value": 5.4,
        "unit": "mg",
        "system": "http://unitsofmeasure.org",
        "code": "mg",
    },
}


def hit(search: str, resource: dict[str, Any]) -> bool:
    return matches(parse_search(search, now_us=NOW_US).query, resource)


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("Patient?given=eve", False),
        ("Patient?given=pet", True),
        ("Patient?given=PETER", True),
        ("Patient?family=chàlmers", True),
        ("Patient?given:exact=Peter", True),
        ("Patient?given:exact=peter", False),
        ("Patient?family:contains=alm", True),
        ("Patient?family:contains=xyz", False),
        ("Patient?name=james", True),
        ("Patient?address=erewhon", False),  # starts-with on each part, not on the line's words
        ("Patient?address=534", True),
        ("Patient?address-city=pleasant", True),
        ("Patient?address-postalcode=3999", True),
        ("Patient?given=eve,peter", True),
        ("Patient?given=peter&given=james", True),
        ("Patient?given=peter&given=eve", False),
    ],
)
def test_string(search: str, expected: bool) -> None:
    assert hit(search, PATIENT) is expected


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("Observation?code=8867-4", True),
        ("Observation?code=http://loinc.org|8867-4", True),
        ("Observation?code=http://snomed.info/sct|8867-4", False),
        ("Observation?code=|8867-4", False),  # the coding has a system
        ("Observation?code=http://snomed.info/sct|", True),
        ("Observation?code:not=8867-4", False),
        ("Observation?code:not=1234-5", True),
        ("Observation?code:text=heart", True),
        ("Observation?code:text=rate", False),
        ("Observation?status=final", True),
        ("Observation?status=final,amended", True),
        ("Observation?status=amended", False),
        ("Patient?gender=male", True),
        # A code element's implicit system (its required binding's code system) matches.
        ("Patient?gender=http://hl7.org/fhir/administrative-gender|male", True),
        ("Patient?gender=http://hl7.org/fhir/administrative-gender|female", False),
        ("Patient?gender=http://hl7.org/fhir/administrative-gender|", True),
        ("Patient?gender=http://example.org/gender|male", False),
        ("Patient?gender:not=http://hl7.org/fhir/administrative-gender|male", False),
        ("Observation?status=http://hl7.org/fhir/observation-status|final", True),
        ("Observation?code=http://hl7.org/fhir/observation-status|final", False),
        ("Patient?active=true", True),
        ("Patient?active=false", False),
        ("Patient?identifier=12345", True),
        ("Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|12345", True),
        ("Patient?identifier=urn:oid:9|12345", False),
        ("Patient?identifier:text=medical", True),
        (
            "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345",
            True,
        ),
        (
            "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|12345",
            False,
        ),
        ("Patient?telecom=(03) 5555 6473", True),
        ("Patient?email=p.chalmers@example.org", True),
        ("Patient?phone=p.chalmers@example.org", False),
        ("Patient?_id=example", True),
        ("Patient?_id=other,example", True),
        ("Patient?_tag=http://example.org/tags|vip", True),
        ("Patient?_tag=vip2", False),
        ("Patient?_security=R", True),
    ],
)
def test_token(search: str, expected: bool) -> None:
    resource = OBSERVATION if search.startswith("Observation") else PATIENT
    assert hit(search, resource) is expected


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("Observation?subject=Patient/example", True),
        ("Observation?subject=example", True),
        ("Observation?subject=Patient/other", False),
        ("Observation?subject:Patient=example", True),
        ("Observation?subject:Group=example", False),
        ("Observation?patient=Patient/example", True),
        ("Observation?subject=http://x.org/fhir/Patient/example", False),
        ("Patient?organization=Organization/1", True),
        ("Patient?organization=1", True),
        ("Patient?general-practitioner:identifier=http://npi|77", True),
        ("Patient?general-practitioner:identifier=http://npi|78", False),
        ("Patient?general-practitioner:identifier=77", True),
    ],
)
def test_reference(search: str, expected: bool) -> None:
    resource = OBSERVATION if search.startswith("Observation") else PATIENT
    assert hit(search, resource) is expected


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        # birthDate 1974-12-25 covers the whole day.
        ("Patient?birthdate=1974", True),
        ("Patient?birthdate=1974-12", True),
        ("Patient?birthdate=1974-12-25", True),
        ("Patient?birthdate=1974-12-25T10:00", False),  # the day is wider than the minute
        ("Patient?birthdate=ne1974-12-25", False),
        ("Patient?birthdate=ne1975", True),
        ("Patient?birthdate=gt1974-12-24", True),
        ("Patient?birthdate=gt1974-12-25", False),
        ("Patient?birthdate=ge1974-12-25", True),
        ("Patient?birthdate=lt1974-12-26", True),
        ("Patient?birthdate=lt1974-12-25", False),
        ("Patient?birthdate=le1974-12-25", True),
        ("Patient?birthdate=sa1974-12-24", True),
        ("Patient?birthdate=sa1974-12", False),
        ("Patient?birthdate=eb1975", True),
        ("Patient?birthdate=eb1974", False),
        ("Patient?birthdate=ap1975", True),  # 10 % of ~50 years is ~5 years
        ("Patient?birthdate=ap1990", False),
        # effectivePeriod 2020-01-15 08:00..09:00Z
        ("Observation?date=2020-01-15", True),
        ("Observation?date=2020-01-15T08:30", False),  # the period is wider than the minute
        ("Observation?date=ge2020-01-15T08:30:00Z", True),
        ("Observation?date=le2020-01-15T08:30:00Z", True),
        ("Observation?date=gt2020-01-15T09:00:00Z", False),
        ("Observation?date=lt2020-01-15T08:00:00Z", False),
        ("Observation?date=2020-01-15T10:00:00+02:00", False),
        ("Observation?date=eq2020-01-15T08:00:00-01:00", False),
        # ge: the resource reaches the searched range; le: it starts within or before it.
        ("Observation?date=ge2020-01-15T09:00:00Z", True),  # ends in the searched second
        ("Observation?date=ge2020-01-15T09:00:01Z", False),
        ("Observation?date=le2020-01", True),  # starts within the searched month
        ("Observation?date=le2020-01-15T08:00:00Z", True),  # starts in the searched second
        ("Observation?date=le2020-01-14", False),
        ("Observation?date=ge2020-01-15", True),
        ("Observation?date=ge2020-01-16", False),
        ("Patient?birthdate=ge1974-12", True),
        ("Patient?birthdate=le1974-12-25T23:59:59Z", True),
        ("Patient?birthdate=le1974-12-24", False),
        ("Patient?_lastUpdated=gt2024-02-29", True),
        ("Patient?_lastUpdated=lt2024-03-01", False),
    ],
)
def test_date(search: str, expected: bool) -> None:
    resource = OBSERVATION if search.startswith("Observation") else PATIENT
    assert hit(search, resource) is expected


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("Observation?value-quantity=5.4", True),
        ("Observation?value-quantity=5", True),  # 5 means [4.5, 5.5)
        ("Observation?value-quantity=5.40", True),  # [5.395, 5.405) holds 5.4
        ("Observation?value-quantity=5.41", False),
        ("Observation?value-quantity=5.0", False),
        ("Observation?value-quantity=5.4|http://unitsofmeasure.org|mg", True),
        ("Observation?value-quantity=5.4|http://unitsofmeasure.org|g", False),
        ("Observation?value-quantity=5.4||mg", True),
        ("Observation?value-quantity=5.4|http://other|mg", False),
        ("Observation?value-quantity=gt5", True),
        ("Observation?value-quantity=gt5.4", False),
        ("Observation?value-quantity=ge5.4", True),
        ("Observation?value-quantity=lt5.4", False),
        ("Observation?value-quantity=le5.4", True),
        ("Observation?value-quantity=ne5.4", False),
        ("Observation?value-quantity=ap5", True),
        ("Observation?value-quantity=ap7", False),
        ("Observation?value-quantity=sa5", True),
        ("Observation?value-quantity=eb5", False),
        ("Observation?value-quantity=1e1", True),  # [5, 15)
    ],
)
def test_quantity(search: str, expected: bool) -> None:
    assert hit(search, OBSERVATION) is expected


def test_number_and_range() -> None:
    risk = {
        "resourceType": "RiskAssessment",
        "prediction": [{"probabilityDecimal": 0.25}, {"probabilityRange": {"low": {"value": 1}}}],
    }
    assert hit("RiskAssessment?probability=0.25", risk)
    assert hit("RiskAssessment?probability=0.3", risk)  # [0.25, 0.35) holds 0.25
    assert not hit("RiskAssessment?probability=0.4", risk)
    assert hit("RiskAssessment?probability=gt100", risk)  # the open range reaches infinity
    assert hit("RiskAssessment?probability=lt0.3", risk)
    assert not hit("RiskAssessment?probability=lt0.2", risk)


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("ValueSet?url=http://acme.org/fhir/ValueSet/123", True),
        ("ValueSet?url=http://acme.org/fhir/ValueSet", False),
        ("ValueSet?url:below=http://acme.org/fhir/", True),
        ("ValueSet?url:below=http://acme.org/other/", False),
        ("ValueSet?url:above=http://acme.org/fhir/ValueSet/123/_history/5", True),
        ("ValueSet?url:above=http://acme.org/other", False),
    ],
)
def test_uri(search: str, expected: bool) -> None:
    value_set = {"resourceType": "ValueSet", "url": "http://acme.org/fhir/ValueSet/123"}
    assert hit(search, value_set) is expected


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("Patient?birthdate:missing=false", True),
        ("Patient?birthdate:missing=true", False),
        ("Patient?death-date:missing=true", True),
        ("Patient?link:missing=true", True),
        ("Patient?family:missing=false", True),
    ],
)
def test_missing(search: str, expected: bool) -> None:
    assert hit(search, PATIENT) is expected


def test_wrong_type_never_matches() -> None:
    assert not hit("Observation?_id=example", PATIENT)


def test_system_level_query_matches_any_type() -> None:
    query = parse_search("_id=example,obs1").query
    assert matches(query, PATIENT)
    assert matches(query, OBSERVATION)


def test_chains_are_not_supported_in_memory() -> None:
    query = parse_search("Observation?subject:Patient.name=peter").query
    with pytest.raises(NotSupportedInMemoryError, match=r"subject:Patient\.name"):
        matches(query, OBSERVATION)
    with pytest.raises(NotSupportedInMemoryError):
        check_in_memory(parse_search("Patient?_has:Observation:patient:code=1").query)
    check_in_memory(parse_search("Patient?name=x").query)


def test_synthea_observations(synthea_resources: list[dict[str, Any]]) -> None:
    observations = [r for r in synthea_resources if r["resourceType"] == "Observation"]
    heights = parse_search("Observation?code=http://loinc.org|8302-2").query
    found = [o for o in observations if matches(heights, o)]
    assert found
    assert all(any(c["code"] == "8302-2" for c in o["code"]["coding"]) for o in found)
    tall = parse_search(
        "Observation?code=http://loinc.org|8302-2&value-quantity=gt170|http://unitsofmeasure.org|cm"
    ).query
    assert all(o["valueQuantity"]["value"] > 170 for o in observations if matches(tall, o))
    assert [o for o in found if o["valueQuantity"]["value"] > 170] == [
        o for o in observations if matches(tall, o)
    ]


def test_cache_shares_extraction_between_queries() -> None:
    cache: dict[tuple[str, str], list[Any]] = {}
    first = parse_search("Observation?code=8867-4").query
    second = parse_search("Observation?code:not=1234-5&status=final").query
    assert matches(first, OBSERVATION, cache=cache)
    assert matches(second, OBSERVATION, cache=cache)
    assert set(cache) == {("token", "Observation.code"), ("token", "Observation.status")}
    # The cache belongs to one resource: what it holds is what the resource has.
    assert not matches(parse_search("Observation?code=1234-5").query, OBSERVATION, cache=cache)


BLOOD_PRESSURE: dict[str, Any] = {
    "resourceType": "Observation",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 150, "unit": "mmHg"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 95, "unit": "mmHg"},
        },
    ],
}


@pytest.mark.parametrize(
    ("search", "resource", "expected"),
    [
        ("Observation?code-value-quantity=http://loinc.org|8867-4$5.4", OBSERVATION, True),
        ("Observation?code-value-quantity=8867-4$gt6", OBSERVATION, False),
        ("Observation?code-value-quantity=1234$5.4,8867-4$lt6", OBSERVATION, True),
        ("Observation?component-code-value-quantity=8480-6$gt140", BLOOD_PRESSURE, True),
        # Parts must hold on the same component (systolic 150, diastolic 95).
        ("Observation?component-code-value-quantity=8480-6$lt100", BLOOD_PRESSURE, False),
        ("Observation?component-code-value-quantity=8462-4$lt100", BLOOD_PRESSURE, True),
        ("Observation?combo-code-value-quantity=8462-4$95||mmHg", BLOOD_PRESSURE, True),
        ("Observation?combo-code-value-quantity=85354-9$95", BLOOD_PRESSURE, False),
        ("Observation?code-value-concept=8867-4$x", OBSERVATION, False),
    ],
)
def test_composite(search: str, resource: dict[str, Any], expected: bool) -> None:
    assert hit(search, resource) is expected


@pytest.mark.parametrize(
    "search",
    [
        "Observation?code=http://loinc.org|8302-2,8867-4",
        "Observation?code=|8302-2",
        "Observation?code=http://loinc.org|",
        "Observation?code:not=8302-2",
        "Observation?code:text=body",
        "Observation?subject=Patient/x,y",
        "Observation?value-quantity=gt100",
        "Observation?date=ge2015",
        "Patient?name=a",
    ],
)
def test_compiled_predicates_agree_with_the_generic_tests(
    search: str, synthea_resources: list[dict[str, Any]]
) -> None:
    from dataclasses import replace

    from fhirbots.subscriptions.search.matcher import clause_matches
    from fhirbots.subscriptions.search.query import ParamClause

    (compiled,) = parse_search(search).query.clauses
    assert isinstance(compiled, ParamClause)
    assert compiled.predicate is not None
    generic = replace(compiled, predicate=None)
    pool = [r for r in synthea_resources if r["resourceType"] == search.split("?")[0]]
    results = [clause_matches(compiled, r) for r in pool]
    assert results == [clause_matches(generic, r) for r in pool]
    assert any(results) or "Patient/x" in search or "=|" in search
