"""The search API over HTTP on both storage engines, with a real Synthea patient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.engine.conftest import Api

BASE = "/fhir/R4"


@pytest.fixture
async def loaded(api: Api, shared_dir: Path) -> dict[str, Any]:
    """One Synthea patient bundle loaded through a transaction; returns the patient."""
    path = sorted((shared_dir / "fhir-samples" / "synthea-r4").glob("*.json"))[0]
    resp = await api.client.post(f"{BASE}/", data=path.read_bytes(), headers=api.headers())
    assert resp.status == 200
    body = await resp.json()
    location = next(
        e["response"]["location"]
        for e in body["entry"]
        if e["response"]["location"].startswith("Patient/")
    )
    patient_id = location.split("/")[1]
    patient: dict[str, Any] = await (
        await api.client.get(f"{BASE}/Patient/{patient_id}", headers=api.headers())
    ).json()
    return patient


async def get(api: Api, path: str, token: str | None = None, **headers: str) -> Any:
    resp = await api.client.get(f"{BASE}/{path}", headers=api.headers(token, **headers))
    assert resp.status == 200, await resp.text()
    return await resp.json()


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


async def test_search_by_name_token_and_reference(api: Api, loaded: dict[str, Any]) -> None:
    family = loaded["name"][0]["family"]
    by_name = await get(api, f"Patient?name={family[:3].lower()}")
    assert by_name["type"] == "searchset" and ids(by_name) == [loaded["id"]]
    assert by_name["total"] == 1
    obs = await get(api, f"Observation?subject=Patient/{loaded['id']}&_count=1000")
    assert obs["total"] == len(ids(obs)) > 0
    assert all(
        e["resource"]["subject"]["reference"] == f"Patient/{loaded['id']}" for e in obs["entry"]
    )
    code = obs["entry"][0]["resource"]["code"]["coding"][0]
    by_code = await get(api, f"Observation?code={code['system']}|{code['code']}&_count=1000")
    assert set(ids(by_code)) <= set(ids(obs)) and ids(by_code)
    none = await get(api, "Patient?name=zzzzzz")
    assert none["total"] == 0 and ids(none) == []


async def test_paging_links_cover_every_match_once(api: Api, loaded: dict[str, Any]) -> None:
    first = await get(api, f"Observation?subject={loaded['id']}&_count=7")
    seen = ids(first)
    page = first
    while (nxt := {link["relation"]: link["url"] for link in page["link"]}.get("next")) is not None:
        page = await get(api, nxt.split("/fhir/R4/", 1)[1])
        seen += ids(page)
    everything = await get(api, f"Observation?subject={loaded['id']}&_count=1000&_total=accurate")
    assert len(seen) == len(set(seen)) == everything["total"]


async def test_summary_count_elements_sort(api: Api, loaded: dict[str, Any]) -> None:
    counted = await get(api, "Encounter?_summary=count")
    assert counted["total"] > 0
    assert counted["entry"] == []
    elements = await get(api, "Patient?_elements=gender")
    resource = elements["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "gender"}
    assert any(t["code"] == "SUBSETTED" for t in resource["meta"]["tag"])
    enc = await get(api, "Encounter?_sort=-date&_count=1000")
    starts = [e["resource"]["period"]["start"] for e in enc["entry"]]
    assert starts == sorted(starts, reverse=True)


async def test_include_and_revinclude(api: Api, loaded: dict[str, Any]) -> None:
    bundle = await get(api, f"Encounter?subject={loaded['id']}&_count=2&_include=Encounter:subject")
    assert ids(bundle, "include") == [loaded["id"]]
    rev = await get(api, f"Patient?_id={loaded['id']}&_revinclude=Condition:subject")
    assert ids(rev) == [loaded["id"]]
    included = [
        e["resource"]["resourceType"] for e in rev["entry"] if e["search"]["mode"] == "include"
    ]
    assert included and set(included) == {"Condition"}


async def test_errors_and_lenient_handling(api: Api, loaded: dict[str, Any]) -> None:
    resp = await api.client.get(f"{BASE}/Patient?nonsense=1", headers=api.headers())
    assert resp.status == 400
    outcome = await resp.json()
    assert "nonsense" in outcome["issue"][0]["diagnostics"]
    lenient = await get(api, "Patient?nonsense=1", **{"Prefer": "handling=lenient"})
    assert ids(lenient) == [loaded["id"]]
    assert any(e["search"]["mode"] == "outcome" for e in lenient["entry"])
    bad_date = await api.client.get(f"{BASE}/Encounter?date=notadate", headers=api.headers())
    assert bad_date.status == 400


async def test_post_search_form(api: Api, loaded: dict[str, Any]) -> None:
    resp = await api.client.post(
        f"{BASE}/Patient/_search",
        data={"_id": loaded["id"]},
        headers={"Authorization": f"Bearer {api.token}"},
    )
    assert resp.status == 200
    assert ids(await resp.json()) == [loaded["id"]]


async def test_search_is_scoped_to_the_project(api: Api, loaded: dict[str, Any]) -> None:
    other = await api.engine.create_project("p2", "Two")
    assert (await get(api, "Patient", token=other))["total"] == 0
    assert (await get(api, f"Observation?subject={loaded['id']}", token=other))["total"] == 0


async def test_conditional_create(api: Api) -> None:
    body = orjson.dumps(
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "42"}],
        }
    )
    headers = api.headers(**{"If-None-Exist": "identifier=urn:mrn|42"})
    first = await api.client.post(f"{BASE}/Patient", data=body, headers=headers)
    assert first.status == 201
    second = await api.client.post(f"{BASE}/Patient", data=body, headers=headers)
    assert second.status == 200
    assert (await second.json())["id"] == (await first.json())["id"]
    await api.client.post(f"{BASE}/Patient", data=body, headers=api.headers())
    third = await api.client.post(f"{BASE}/Patient", data=body, headers=headers)
    assert third.status == 412


async def test_batch_get_entry_can_search(api: Api, loaded: dict[str, Any]) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"Patient?_id={loaded['id']}"}}],
    }
    resp = await api.client.post(f"{BASE}/", data=orjson.dumps(bundle), headers=api.headers())
    body = await resp.json()
    assert body["entry"][0]["resource"]["type"] == "searchset"
    assert body["entry"][0]["resource"]["total"] == 1
