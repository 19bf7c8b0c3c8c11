"""Referential integrity on write and delete, through the FHIR service, on every storage."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbots.engine.errors import BadRequest, Conflict, Unprocessable
from fhirbots.engine.fhir.integrity import (
    IntegrityPolicy,
    cascade_requested,
    local_references,
    parse_local,
)
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import WriteContext
from fhirbots.engine.storage.port import Storage

CTX = WriteContext(author="ApiKey/k1")
BASE = "https://fhir.example/fhir/R4"


def observation(oid: str, subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": subject},
        **extra,
    }


def patient(pid: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, **extra}


def test_only_references_to_local_resources_are_checked() -> None:
    assert parse_local("Patient/1") == ("Patient", "1")
    assert parse_local("Patient/1/_history/3") == ("Patient", "1")
    assert parse_local(f"{BASE}/Patient/1", [BASE]) == ("Patient", "1")
    for other in (
        "#contained",
        "urn:uuid:0b1c5e4e-0000-4000-8000-000000000000",
        "Patient?identifier=x|1",
        "https://elsewhere.example/fhir/Patient/1",
        "Robot/1",
        "patient/1",
    ):
        assert parse_local(other, [BASE]) is None, other


def test_local_references_name_their_element() -> None:
    found = local_references(
        {
            "resourceType": "Observation",
            "subject": {"reference": "Patient/a"},
            "performer": [{"reference": "#p"}, {"reference": "Practitioner/dr"}],
            "focus": [{"identifier": {"value": "logical"}}],
            "contained": [{"resourceType": "Basic", "subject": {"reference": "Group/g"}}],
        }
    )
    assert [(r.path, r.reference) for r in found] == [
        ("Observation.subject", "Patient/a"),
        ("Observation.performer[1]", "Practitioner/dr"),
        ("Observation.contained[0].subject", "Group/g"),
    ]


def test_the_settings_turn_the_checks_off() -> None:
    policy = IntegrityPolicy.from_settings(
        Settings.from_env(
            {
                "FHIRBOTS_REFERENTIAL_INTEGRITY_ON_WRITE": "false",
                "FHIRBOTS_REFERENTIAL_INTEGRITY_ON_DELETE": "false",
                "FHIRBOTS_PUBLIC_URL": BASE + "/",
            }
        )
    )
    assert not policy.on_write and not policy.on_delete and policy.base_urls == (BASE,)
    assert IntegrityPolicy.from_settings(Settings()).on_write
    with pytest.raises(ValueError, match="FHIRBOTS_REFERENTIAL_INTEGRITY_ON_DELETE"):
        Settings.from_env({"FHIRBOTS_REFERENTIAL_INTEGRITY_ON_DELETE": "maybe"})
    assert cascade_requested("delete") and not cascade_requested(None)
    with pytest.raises(BadRequest, match="_cascade"):
        cascade_requested("yes")


@pytest.fixture
def fhir(storage: Storage) -> FhirService:
    return FhirService(storage, integrity=IntegrityPolicy(base_urls=(BASE,), cascade_limit=3))


async def test_a_reference_to_a_missing_resource_is_refused(fhir: FhirService) -> None:
    with pytest.raises(Unprocessable) as refused:
        await fhir.update("p1", "Observation", "o1", observation("o1", "Patient/nobody"), CTX)
    assert refused.value.issues[0].expression == ("Observation.subject",)
    assert "'Patient/nobody'" in refused.value.message
    await fhir.update("p1", "Patient", "a", patient("a"), CTX)
    await fhir.update("p1", "Observation", "o1", observation("o1", "Patient/a"), CTX)
    await fhir.update("p1", "Observation", "o2", observation("o2", f"{BASE}/Patient/a"), CTX)
    # Another project's resource does not count; a deleted one neither.
    with pytest.raises(Unprocessable):
        await fhir.update("p2", "Observation", "o1", observation("o1", "Patient/a"), CTX)
    await fhir.update("p1", "Patient", "gone", patient("gone"), CTX)
    await fhir.delete("p1", "Patient", "gone", CTX)
    with pytest.raises(Unprocessable, match="Patient/gone"):
        await fhir.create("p1", observation("x", "Patient/gone/_history/1"), CTX)
    # External, contained and conditional references are not checked.
    await fhir.create("p1", observation("x", "https://elsewhere.example/Patient/1"), CTX)


async def test_a_referenced_resource_is_not_deleted(fhir: FhirService) -> None:
    await fhir.update("p1", "Patient", "a", patient("a"), CTX)
    await fhir.update("p1", "Observation", "o1", observation("o1", "Patient/a"), CTX)
    with pytest.raises(Conflict, match="referenced by Observation/o1"):
        await fhir.delete("p1", "Patient", "a", CTX)
    assert not (await fhir.storage.read("p1", "Patient", "a")).deleted  # type: ignore[union-attr]
    await fhir.delete("p1", "Observation", "o1", CTX)
    await fhir.delete("p1", "Patient", "a", CTX)
    # Deleting what is not there changes nothing, even when something names it.
    await FhirService(fhir.storage, integrity=IntegrityPolicy(on_write=False)).update(
        "p1", "Observation", "o2", observation("o2", "Patient/never"), CTX
    )
    result = await fhir.delete("p1", "Patient", "never", CTX)
    assert result.stored is None and result.event is None
    assert (await fhir.storage.read("p1", "Patient", "a")).deleted  # type: ignore[union-attr]


async def test_cascade_deletes_the_referrers_recursively_and_bounded(fhir: FhirService) -> None:
    await fhir.update("p1", "Patient", "a", patient("a"), CTX)
    await fhir.update("p1", "Encounter", "e1", _encounter("e1", "Patient/a"), CTX)
    await fhir.update(
        "p1",
        "Observation",
        "o1",
        observation("o1", "Patient/a", encounter={"reference": "Encounter/e1"}),
        CTX,
    )
    await fhir.update("p1", "Patient", "b", patient("b"), CTX)
    result = await fhir.delete("p1", "Patient", "a", CTX, cascade=True)
    assert result.stored is not None and result.stored.id == "a"
    for key in (("Patient", "a"), ("Encounter", "e1"), ("Observation", "o1")):
        assert await fhir.storage.existing("p1", [key]) == set()
    assert await fhir.storage.existing("p1", [("Patient", "b")]) == {("Patient", "b")}
    # More than the limit (3 here) is refused before anything is deleted.
    for oid in ("x1", "x2", "x3"):
        await fhir.update("p1", "Observation", oid, observation(oid, "Patient/b"), CTX)
    with pytest.raises(Conflict, match="more than 3"):
        await fhir.delete("p1", "Patient", "b", CTX, cascade=True)
    assert await fhir.storage.existing("p1", [("Patient", "b")]) == {("Patient", "b")}


async def test_records_of_what_happened_are_left_out(fhir: FhirService) -> None:
    audit = {
        "resourceType": "AuditEvent",
        "id": "ae",
        "type": {"code": "rest"},
        "recorded": "2026-01-01T00:00:00Z",
        "agent": [{"requestor": True, "who": {"reference": "Device/gone"}}],
        "source": {"observer": {"reference": "Device/gone"}},
        "entity": [{"what": {"reference": "Patient/a"}}],
    }
    await fhir.update("p1", "AuditEvent", "ae", audit, CTX)  # references not checked
    document = {
        "resourceType": "Bundle",
        "id": "doc",
        "type": "collection",
        "entry": [
            {
                "fullUrl": "https://elsewhere.example/Patient/x",
                "resource": {"resourceType": "Patient"},
            },
            {"resource": observation("o", "Patient/x")},
        ],
    }
    await fhir.update("p1", "Bundle", "doc", document, CTX)  # resolved within the Bundle
    await fhir.update("p1", "Patient", "a", patient("a"), CTX)
    await fhir.delete("p1", "Patient", "a", CTX)  # the AuditEvent does not block
    assert await fhir.storage.existing("p1", [("AuditEvent", "ae")]) == {("AuditEvent", "ae")}


async def test_the_checks_can_be_turned_off(storage: Storage) -> None:
    fhir = FhirService(storage, integrity=IntegrityPolicy(on_write=False, on_delete=False))
    await fhir.update("p1", "Observation", "o1", observation("o1", "Patient/a"), CTX)
    await fhir.update("p1", "Patient", "a", patient("a"), CTX)
    await fhir.delete("p1", "Patient", "a", CTX)


def _encounter(eid: str, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": subject},
    }
