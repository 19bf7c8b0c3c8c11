"""Required bindings: codes outside the lists the R4B models carry are reported by path."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient

from fhirbots.schemas.bindings import binding_problems, bound_codes
from fhirbots.schemas.validation import ResourceInvalid, validate_resource


def test_the_codes_come_from_the_models() -> None:
    assert bound_codes(Patient, "gender") == frozenset({"male", "female", "other", "unknown"})
    assert bound_codes(Patient, "birthDate") is None


def test_an_incomplete_list_is_completed_from_the_value_set() -> None:
    codes = bound_codes(Observation, "status")
    assert codes is not None and {"final", "cancelled", "entered-in-error"} <= codes
    assert "+" not in codes


def test_every_code_outside_its_binding_is_named_by_path() -> None:
    problems = binding_problems(
        {
            "resourceType": "Patient",
            "gender": "robot",
            "name": [{"use": "official"}, {"use": "nickname-ish"}],
            "contact": [{"gender": "female"}, {"gender": "droid"}],
            "contained": [{"resourceType": "Observation", "status": "weird"}],
        }
    )
    assert [path for path, _ in problems] == [
        "Patient.gender",
        "Patient.name[1].use",
        "Patient.contact[1].gender",
        "Patient.contained[0].status",
    ]
    assert "'robot'" in problems[0][1]
    assert "female, male, other, unknown" in problems[0][1]


def test_allowed_codes_and_unknown_types_have_no_problems() -> None:
    assert binding_problems({"resourceType": "Patient", "gender": "female"}) == []
    assert binding_problems({"resourceType": "Observation", "status": "cancelled"}) == []
    assert binding_problems({"resourceType": "Bot", "name": "b"}) == []


def test_the_facade_reports_structure_and_binding_problems_together() -> None:
    with pytest.raises(ResourceInvalid) as refused:
        validate_resource({"resourceType": "Patient", "gender": "robot", "active": "maybe"})
    found = {(p.path, p.code) for p in refused.value.problems}
    assert ("Patient.gender", "code-invalid") in found
    assert ("Patient.active", "structure") in found


def test_r4b_codes_the_models_leave_out_are_allowed() -> None:
    notification = {"resourceType": "Bundle", "type": "subscription-notification"}
    assert binding_problems(notification) == []
    assert binding_problems({"resourceType": "Bundle", "type": "notification"}) != []
