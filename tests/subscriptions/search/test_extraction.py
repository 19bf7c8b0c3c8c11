"""Tests of expression compilation: the fast path agrees with fhirpathpy."""

from __future__ import annotations

import json
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.models import models

from fhirbots.subscriptions.search.extraction import compile_expression, is_fast_path
from fhirbots.subscriptions.search.registry import default_registry


def _reference_values(resource: dict[str, Any], expression: str) -> list[Any]:
    values = fhirpathpy.evaluate(resource, expression, {}, models["r4"])
    # fhirpathpy returns decimals as Decimal; compare as the JSON numbers they came from.
    return list(json.loads(json.dumps(values, default=float)))


def test_common_forms_take_the_fast_path() -> None:
    assert is_fast_path("Observation.code", "Observation")
    assert is_fast_path("(Observation.value as Quantity)", "Observation")
    assert is_fast_path("Condition.onset.as(Period)", "Condition")
    assert is_fast_path("Observation.subject.where(resolve() is Patient)", "Observation")
    assert is_fast_path("Patient.telecom.where(system='email')", "Patient")
    assert not is_fast_path("Patient.deceased.exists() and Patient.deceased != false", "Patient")


def test_nearly_all_r4_parameters_compile_to_the_fast_path() -> None:
    reg = default_registry()
    slow = [
        (t, c)
        for t in reg.resource_types
        for c in reg.codes(t)
        if (p := reg.get(t, c)) is not None
        and p.supported
        and p.expression
        and not is_fast_path(p.expression, t)
    ]
    assert len(slow) <= 10, slow


def test_fast_path_agrees_with_fhirpathpy(
    synthea_resources: list[dict[str, Any]], hl7_examples: list[dict[str, Any]]
) -> None:
    reg = default_registry()
    seen_types: set[str] = set()
    checked = 0
    for resource in [*synthea_resources, *hl7_examples]:
        resource_type = resource["resourceType"]
        # One resource per type keeps the reference (slow) evaluation cheap.
        if resource_type in seen_types:
            continue
        seen_types.add(resource_type)
        for code in reg.codes(resource_type):
            param = reg.get(resource_type, code)
            if param is None or not param.supported or param.expression is None:
                continue
            if "resolve()" in param.expression:  # fhirpathpy cannot resolve references
                continue
            fast = compile_expression(param.expression, resource_type)(resource)
            assert fast == _reference_values(resource, param.expression), (resource_type, code)
            checked += 1
    assert checked > 300


def test_resolve_filter_keeps_references_of_that_type() -> None:
    extract = compile_expression("Observation.subject.where(resolve() is Patient)", "Observation")
    assert extract({"subject": {"reference": "Patient/1"}}) == [{"reference": "Patient/1"}]
    assert extract({"subject": {"reference": "Group/1"}}) == []
    absolute = {"reference": "http://x.org/fhir/Patient/9"}
    assert extract({"subject": absolute}) == [absolute]


def test_bare_choice_element_selects_any_variant() -> None:
    extract = compile_expression("Observation.effective", "Observation")
    assert extract({"effectiveDateTime": "2020"}) == ["2020"]
    period = {"start": "2020"}
    assert extract({"effectivePeriod": period}) == [period]


@pytest.mark.parametrize(
    ("deceased", "expected"),
    [({"deceasedBoolean": True}, [True]), ({"deceasedDateTime": "2020"}, [True]), ({}, [False])],
)
def test_fallback_uses_fhirpath(deceased: dict[str, Any], expected: list[Any]) -> None:
    extract = compile_expression(
        "Patient.deceased.exists() and Patient.deceased != false", "Patient"
    )
    assert extract({"resourceType": "Patient", **deceased}) == expected
