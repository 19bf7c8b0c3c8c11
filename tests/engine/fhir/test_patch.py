"""The three PATCH formats on a resource (no storage: the patch module is pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from fhirbots.engine.errors import BadRequest, FhirError, Unprocessable, UnsupportedMediaType
from fhirbots.engine.fhir.patch import (
    FHIRPATH_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    PLAIN_JSON,
    apply_patch,
)
from fhirbots.engine.storage.model import StoredResource

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [{"family": "Chalmers", "given": ["Peter", "James"]}, {"family": "Windsor"}],
    "birthDate": "1974-12-25",
}


def current() -> StoredResource:
    return StoredResource("Patient", "p1", 1, datetime.now(UTC), False, PATIENT)


def value_part(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return {
            "name": "value",
            "part": [{"name": k, "valueString": v} for k, v in value.items()],
        }
    key = {bool: "valueBoolean", int: "valueInteger", str: "valueString"}[type(value)]
    return {"name": "value", key: value}


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    out: list[dict[str, Any]] = [
        {"name": "type", "valueCode": kind},
        {"name": "path", "valueString": path},
    ]
    for name, value in parts.items():
        if name == "value":
            out.append(value_part(value))
        elif isinstance(value, int):
            out.append({"name": name, "valueInteger": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"name": "operation", "part": out}


def fhirpath(*operations: dict[str, Any]) -> dict[str, Any]:
    patched = apply_patch(
        current(), {"resourceType": "Parameters", "parameter": list(operations)}, FHIRPATH_PATCH
    )
    assert PATIENT["birthDate"] == "1974-12-25", "the stored content is never changed"
    return patched


def test_json_patch_and_plain_json_array() -> None:
    ops = [{"op": "replace", "path": "/name/0/family", "value": "Patched"}]
    for media in (JSON_PATCH, PLAIN_JSON):
        assert apply_patch(current(), ops, media)["name"][0]["family"] == "Patched"
    with pytest.raises(Unprocessable):
        apply_patch(current(), [{"op": "remove", "path": "/nothing"}], JSON_PATCH)
    with pytest.raises(BadRequest):
        apply_patch(current(), {"op": "add"}, JSON_PATCH)
    with pytest.raises(BadRequest):
        apply_patch(current(), [{"op": "add"}], JSON_PATCH)


def test_merge_patch_merges_objects_replaces_lists_and_removes_nulls() -> None:
    for media in (MERGE_PATCH, PLAIN_JSON):
        patched = apply_patch(
            current(), {"birthDate": None, "active": True, "name": [{"family": "X"}]}, media
        )
        assert "birthDate" not in patched
        assert patched["active"] is True and patched["name"] == [{"family": "X"}]
    with pytest.raises(Unprocessable, match="resourceType or id"):
        apply_patch(current(), {"id": "other"}, MERGE_PATCH)
    with pytest.raises(BadRequest):
        apply_patch(current(), "text", MERGE_PATCH)


def test_fhirpath_patch_operations() -> None:
    assert fhirpath(operation("replace", "Patient.birthDate", value="1980-01-01"))["birthDate"] == (
        "1980-01-01"
    )
    assert fhirpath(operation("add", "Patient", name="active", value=True))["active"] is True
    added = fhirpath(operation("add", "Patient", name="identifier", value={"value": "42"}))
    assert added["identifier"] == [{"value": "42"}], "a list element is added as a list"
    appended = fhirpath(operation("add", "Patient.name[1]", name="given", value="Anne"))
    assert appended["name"][1]["given"] == ["Anne"]
    deleted = fhirpath(operation("delete", "Patient.name.where(family='Windsor')"))
    assert [n["family"] for n in deleted["name"]] == ["Chalmers"]
    assert fhirpath(operation("delete", "Patient.name[0].given[1]"))["name"][0]["given"] == [
        "Peter"
    ]
    assert fhirpath(operation("delete", "Patient.gender")) == PATIENT, "deleting nothing is fine"
    inserted = fhirpath(operation("insert", "Patient.name[0].given", index=0, value="Dr"))
    assert inserted["name"][0]["given"] == ["Dr", "Peter", "James"]
    moved = fhirpath(operation("move", "Patient.name", source=1, destination=0))
    assert [n["family"] for n in moved["name"]] == ["Windsor", "Chalmers"]
    replaced = fhirpath(operation("replace", "Patient.name[1]", value={"family": "New"}))
    assert replaced["name"][1] == {"family": "New"}
    both = fhirpath(
        operation("replace", "Patient.birthDate", value="1990-02-02"),
        operation("add", "Patient", name="gender", value="male"),
    )
    assert (both["birthDate"], both["gender"]) == ("1990-02-02", "male")


@pytest.mark.parametrize(
    ("op", "error"),
    [
        (operation("replace", "Patient.name", value="x"), Unprocessable),
        (operation("add", "Patient", name="birthDate", value="x"), Unprocessable),
        (operation("delete", "Patient"), Unprocessable),
        (operation("insert", "Patient.name", index=5, value={"family": "x"}), Unprocessable),
        (operation("replace", "Patient.birthDate"), BadRequest),
        (operation("rename", "Patient.birthDate"), BadRequest),
        ({"name": "operation", "part": [{"name": "type", "valueCode": "add"}]}, BadRequest),
        ({"name": "other"}, BadRequest),
    ],
)
def test_fhirpath_patch_refusals_name_the_operation(
    op: dict[str, Any], error: type[FhirError]
) -> None:
    with pytest.raises(error) as refused:
        fhirpath(op)
    assert refused.value.issues[0].diagnostics.startswith("Parameters.parameter[0]")


def test_other_bodies_and_media_types() -> None:
    with pytest.raises(BadRequest, match="Parameters"):
        apply_patch(current(), {"resourceType": "Patient"}, FHIRPATH_PATCH)
    with pytest.raises(UnsupportedMediaType):
        apply_patch(current(), [], "text/plain")
