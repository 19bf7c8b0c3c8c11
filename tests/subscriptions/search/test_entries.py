"""Tests of the entries a resource contributes per parameter."""

from __future__ import annotations

from typing import Any

from fhirbots.subscriptions.search import default_registry, entries_for, resource_entries
from fhirbots.subscriptions.search.entries import composite_groups
from fhirbots.subscriptions.search.values import DateEntry, QuantityEntry, StringEntry, TokenEntry


def test_synthea_patient_entries(synthea_resources: list[dict[str, Any]]) -> None:
    patient = next(r for r in synthea_resources if r["resourceType"] == "Patient")
    entries = resource_entries(patient)
    family = patient["name"][0]["family"]
    assert StringEntry(family.casefold(), family) in entries["family"]
    assert TokenEntry(None, patient["gender"], None) in entries["gender"]
    assert entries["_id"] == [TokenEntry(None, patient["id"], None)]
    (birth,) = entries["birthdate"]
    assert isinstance(birth, DateEntry)
    assert birth.high - birth.low == 86_400_000_000 - 1  # a date covers its whole day
    # Every parameter listed has values; parameters without values are left out.
    assert all(entries.values())
    assert "death-date" not in entries


def test_unsupported_parameters_have_no_entries() -> None:
    near = default_registry().get("Location", "near")
    assert near is not None
    location = {"resourceType": "Location", "position": {"latitude": 1, "longitude": 2}}
    assert entries_for(near, location) == []


def test_composite_groups_keep_components_of_one_element_together() -> None:
    param = default_registry().get("Observation", "component-code-value-quantity")
    assert param is not None
    observation = {
        "resourceType": "Observation",
        "component": [
            {"code": {"coding": [{"code": "a"}]}, "valueQuantity": {"value": 1}},
            {"code": {"coding": [{"code": "b"}]}},
        ],
    }
    first, second = composite_groups(param, observation)
    assert first == [[TokenEntry(None, "a", None)], [QuantityEntry(1.0, 1.0, None, None, None)]]
    assert second == [[TokenEntry(None, "b", None)], []]
    code = default_registry().get("Observation", "code")
    assert code is not None
    assert composite_groups(code, observation) == []
