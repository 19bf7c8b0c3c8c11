"""SearchParameter resources over HTTP on both storage engines: US Core race and ethnicity on
Synthea patients, ``$reindex`` of what was stored before, per-project effect, criteria, 422s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.engine.conftest import Api
from tests.waiting import eventually

BASE = "/fhir/R4"
RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"


def us_core(shared_dir: Path, code: str) -> dict[str, Any]:
    bundle = json.loads((shared_dir / "fhir" / "search-parameters-us-core.json").read_text())
    found: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["code"] == code
    )
    return found


async def send(
    api: Api, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any, Any]:
    resp = await api.client.request(method, f"{BASE}/{path}", json=body, headers=api.headers(token))
    return resp.status, await resp.json(), resp.headers


async def ids(api: Api, search: str) -> list[str]:
    status, body, _ = await send(api, "GET", search)
    assert status == 200, body
    return sorted(e["resource"]["id"] for e in body.get("entry", []))


def omb(patient: dict[str, Any], url: str) -> str:
    extension = next(e for e in patient["extension"] if e["url"] == url)
    code: str = next(
        e["valueCoding"]["code"] for e in extension["extension"] if e["url"] == "ombCategory"
    )
    return code


@pytest.fixture
async def synthea_patient(api: Api, shared_dir: Path) -> dict[str, Any]:
    """The first Synthea bundle, stored before any SearchParameter exists."""
    path = sorted((shared_dir / "fhir-samples" / "synthea-r4").glob("*.json"))[0]
    bundle = json.loads(path.read_text())
    patient: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    status, body, _ = await send(api, "PUT", f"Patient/{patient['id']}", patient)
    assert status == 201, body
    return patient


async def reindexed(api: Api) -> dict[str, Any]:
    status, job, headers = await send(api, "POST", "$reindex")
    assert status == 202, job
    location = headers["Content-Location"].split(f"{BASE}/", 1)[1]

    async def finished() -> dict[str, Any] | None:
        status, body, _ = await send(api, "GET", location)
        assert status == 200, body
        parts = {p["name"]: next(v for k, v in p.items() if k != "name") for p in body["parameter"]}
        return parts if parts["status"] != "running" else None

    return await eventually(finished, "the reindex job to finish")


async def test_us_core_race_and_ethnicity(
    api: Api, shared_dir: Path, synthea_patient: dict[str, Any]
) -> None:
    race = omb(synthea_patient, RACE_URL)
    status, body, _ = await send(api, "GET", f"Patient?race={race}")
    assert status == 400 and "race" in body["issue"][0]["diagnostics"]
    for code in ("race", "ethnicity"):
        resource = us_core(shared_dir, code)
        status, body, _ = await send(api, "PUT", f"SearchParameter/{resource['id']}", resource)
        assert status == 201, body
    # Stored before the parameter: no rows for it until reindexed.
    assert await ids(api, f"Patient?race={race}") == []
    job = await reindexed(api)
    assert job["status"] == "completed" and job["done"] == job["total"] >= 1
    assert job["type"] == "Patient"
    assert await ids(api, f"Patient?race={race}") == [synthea_patient["id"]]
    assert await ids(api, "Patient?race=0000-0") == []
    ethnicity = omb(synthea_patient, RACE_URL.replace("race", "ethnicity"))
    assert await ids(api, f"Patient?ethnicity={ethnicity}&race={race}") == [synthea_patient["id"]]
    # Written after the parameter: indexed at once.
    other = {**synthea_patient, "id": "later"}
    assert (await send(api, "PUT", "Patient/later", other))[0] == 201
    assert await ids(api, f"Patient?race={race}") == sorted(["later", synthea_patient["id"]])
    # A criterion on it, matched in memory by the same definition.
    subscription = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "race",
        "criteria": f"Patient?race={race}",
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
    }
    assert (await send(api, "POST", "Subscription", subscription))[0] == 201
    status, explained, _ = await send(api, "POST", "Subscription/$explain", synthea_patient)
    parts = {p["name"]: p for p in explained["parameter"][0]["part"]}
    assert parts["fires"]["valueBoolean"] is True


async def test_parameters_are_per_project(
    api: Api, shared_dir: Path, synthea_patient: dict[str, Any]
) -> None:
    resource = us_core(shared_dir, "race")
    assert (await send(api, "PUT", f"SearchParameter/{resource['id']}", resource))[0] == 201
    other = await api.engine.create_project("p2", "Project two")
    copy = {**synthea_patient, "id": "x"}
    assert (await send(api, "PUT", "Patient/x", copy, token=other))[0] == 201
    status, body, _ = await send(api, "GET", "Patient?race=2106-3", token=other)
    assert status == 400 and "race" in body["issue"][0]["diagnostics"]
    criteria = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "race",
        "criteria": "Patient?race=2106-3",
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
    }
    assert (await send(api, "POST", "Subscription", criteria, token=other))[0] == 422


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"type": "composite"}, "SearchParameter.type"),
        ({"type": "special"}, "SearchParameter.type"),
        ({"code": "gender"}, "clashes with the built-in Patient"),
        ({"expression": "Patient.extension.where("}, "SearchParameter.expression"),
        ({"expression": "Patient.extension.nosuchfunction()"}, "SearchParameter.expression"),
        ({"base": ["NotAType"]}, "unknown resource type"),
    ],
)
async def test_invalid_search_parameters_are_refused(
    api: Api, shared_dir: Path, change: dict[str, Any], named: str
) -> None:
    resource = {**us_core(shared_dir, "race"), **change}
    status, body, _ = await send(api, "POST", "SearchParameter", resource)
    assert status == 422, body
    assert named in body["issue"][0]["diagnostics"]


async def test_a_code_defined_twice_is_refused(api: Api, shared_dir: Path) -> None:
    resource = {**us_core(shared_dir, "race"), "id": "a"}
    assert (await send(api, "PUT", "SearchParameter/a", resource))[0] == 201
    assert (await send(api, "PUT", "SearchParameter/a", resource))[0] == 200  # itself: fine
    status, body, _ = await send(api, "PUT", "SearchParameter/b", {**resource, "id": "b"})
    assert status == 422 and "SearchParameter/a" in body["issue"][0]["diagnostics"]


async def test_unknown_job_is_404(api: Api) -> None:
    assert (await send(api, "GET", "$reindex/nope"))[0] == 404
