"""Terminology modifiers: ValueSet expansion, CodeSystem hierarchies, and matching with them."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbots.subscriptions.search import (
    InvalidValueError,
    MissingTerminologyError,
    Terminology,
    matches,
    parse_search,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CS = "http://example.org/cs/findings"

CODE_SYSTEM: dict[str, Any] = {
    "resourceType": "CodeSystem",
    "url": CS,
    "status": "active",
    "content": "complete",
    "concept": [
        {
            "code": "disorder",
            "concept": [
                {"code": "heart", "concept": [{"code": "arrhythmia"}, {"code": "murmur"}]},
                {"code": "lung"},
            ],
        },
        {"code": "finding"},
        {"code": "tachycardia", "property": [{"code": "parent", "valueCode": "arrhythmia"}]},
    ],
}

VITALS: dict[str, Any] = {
    "resourceType": "ValueSet",
    "url": "http://example.org/vs/vitals",
    "status": "active",
    "compose": {
        "include": [{"system": LOINC, "concept": [{"code": "8867-4"}, {"code": "8310-5"}]}]
    },
}

EVERYTHING: dict[str, Any] = {
    "resourceType": "ValueSet",
    "url": "http://example.org/vs/all",
    "status": "active",
    "compose": {
        "include": [
            {"system": SNOMED},
            {"valueSet": ["http://example.org/vs/vitals"]},
            {"system": CS, "filter": [{"property": "concept", "op": "is-a", "value": "heart"}]},
        ],
        "exclude": [{"system": CS, "concept": [{"code": "murmur"}]}],
    },
}

EXPANDED: dict[str, Any] = {
    "resourceType": "ValueSet",
    "url": "http://example.org/vs/expanded",
    "status": "active",
    "compose": {"include": [{"system": LOINC, "concept": [{"code": "ignored"}]}]},
    "expansion": {
        "timestamp": "2024-01-01",
        "contains": [
            {"system": LOINC, "code": "8302-2", "contains": [{"system": LOINC, "code": "3141-9"}]}
        ],
    },
}

GENDERS: dict[str, Any] = {
    "resourceType": "ValueSet",
    "url": "http://example.org/vs/gender",
    "status": "active",
    "compose": {
        "include": [
            {"system": "http://hl7.org/fhir/administrative-gender", "concept": [{"code": "male"}]}
        ]
    },
}

TERMINOLOGY = Terminology([CODE_SYSTEM, VITALS, EVERYTHING, EXPANDED, GENDERS])


def observation(system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
    }


def hit(search: str, resource: dict[str, Any]) -> bool:
    return matches(parse_search(search, terminology=TERMINOLOGY).query, resource)


def test_explicit_concepts() -> None:
    assert TERMINOLOGY.expand("http://example.org/vs/vitals", "code:in") == [
        (LOINC, "8310-5"),
        (LOINC, "8867-4"),
    ]


def test_whole_systems_imports_filters_and_excludes() -> None:
    assert TERMINOLOGY.expand("http://example.org/vs/all", "code:in") == [
        (CS, "arrhythmia"),
        (CS, "heart"),
        (CS, "tachycardia"),
        (LOINC, "8310-5"),
        (LOINC, "8867-4"),
        (SNOMED, None),
    ]


def test_an_expansion_wins_over_compose() -> None:
    assert TERMINOLOGY.expand("http://example.org/vs/expanded", "x") == [
        (LOINC, "3141-9"),
        (LOINC, "8302-2"),
    ]


def test_hierarchy_below_and_above() -> None:
    assert [c for _, c in TERMINOLOGY.below(CS, "heart", "x")] == [
        "heart",
        "arrhythmia",
        "murmur",
        "tachycardia",
    ]
    assert [c for _, c in TERMINOLOGY.above(CS, "tachycardia", "x")] == [
        "tachycardia",
        "arrhythmia",
        "heart",
        "disorder",
    ]


@pytest.mark.parametrize(
    ("search", "resource", "expected"),
    [
        ("Observation?code:in=http://example.org/vs/vitals", observation(LOINC, "8867-4"), True),
        ("Observation?code:in=http://example.org/vs/vitals", observation(LOINC, "8302-2"), False),
        ("Observation?code:in=http://example.org/vs/all", observation(SNOMED, "123"), True),
        ("Observation?code:in=http://example.org/vs/all", observation(CS, "murmur"), False),
        ("Observation?code:not-in=http://example.org/vs/vitals", observation(LOINC, "1"), True),
        ("Observation?code:not-in=http://example.org/vs/all", observation(SNOMED, "1"), False),
        (f"Observation?code:below={CS}|heart", observation(CS, "tachycardia"), True),
        (f"Observation?code:below={CS}|heart", observation(CS, "lung"), False),
        (f"Observation?code:above={CS}|murmur", observation(CS, "disorder"), True),
        (f"Observation?code:above={CS}|murmur", observation(CS, "arrhythmia"), False),
        (
            "Patient?gender:in=http://example.org/vs/gender",
            {"resourceType": "Patient", "gender": "male"},
            True,
        ),
        (
            "Patient?gender:in=http://example.org/vs/gender",
            {"resourceType": "Patient", "gender": "female"},
            False,
        ),
    ],
)
def test_matching(search: str, resource: dict[str, Any], expected: bool) -> None:
    assert hit(search, resource) is expected


@pytest.mark.parametrize(
    ("search", "named"),
    [
        ("Observation?code:in=http://example.org/vs/nope", "ValueSet 'http://example.org/vs/nope'"),
        ("Observation?code:below=http://example.org/cs/nope|x", "CodeSystem"),
        ("Observation?code:in=http://example.org/vs/vitals|9.9", "ValueSet"),
    ],
)
def test_missing_terminology_is_named(search: str, named: str) -> None:
    with pytest.raises(MissingTerminologyError) as caught:
        parse_search(search, terminology=TERMINOLOGY)
    assert named in str(caught.value)


def test_below_needs_a_system() -> None:
    with pytest.raises(InvalidValueError):
        parse_search("Observation?code:below=heart", terminology=TERMINOLOGY)


def test_without_terminology_every_value_set_is_missing() -> None:
    with pytest.raises(MissingTerminologyError):
        parse_search("Observation?code:in=http://example.org/vs/vitals")
