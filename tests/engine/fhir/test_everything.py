"""``Patient/$everything`` over HTTP on both storage engines, with a real Synthea patient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from tests.engine.api.test_search import get
from tests.engine.conftest import Api

BASE = "/fhir/R4"


@pytest.fixture
async def record(api: Api, shared_dir: Path) -> dict[str, Any]:
    """One Synthea patient bundle loaded through a transaction, plus a second patient with an
    observation; returns the Synthea patient's id and how many resources of each type name
    it."""
    path = sorted((shared_dir / "fhir-samples" / "synthea-r4").glob("*.json"))[0]
    resp = await api.client.post(f"{BASE}/", data=path.read_bytes(), headers=api.headers())
    assert resp.status == 200
    locations = [e["response"]["location"] for e in (await resp.json())["entry"]]
    [patient_id] = [loc.split("/")[1] for loc in locations if loc.startswith("Patient/")]
    other = await api.client.post(
        f"{BASE}/Patient", data=b'{"resourceType":"Patient"}', headers=api.headers()
    )
    other_id = (await other.json())["id"]
    await api.client.post(
        f"{BASE}/Observation",
        data=(
            '{"resourceType":"Observation","status":"final","code":{"text":"x"},'
            f'"subject":{{"reference":"Patient/{other_id}"}}}}'
        ).encode(),
        headers=api.headers(),
    )
    observations = await get(api, f"Observation?subject=Patient/{patient_id}&_summary=count")
    return {"id": patient_id, "other": other_id, "observations": observations["total"]}


def resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


async def test_everything_pages_through_the_compartment(api: Api, record: dict[str, Any]) -> None:
    pid = record["id"]
    first = await get(api, f"Patient/{pid}/$everything?_count=100")
    assert first["type"] == "searchset"
    total = first["total"]
    assert total > record["observations"] > 0
    seen = resources(first)
    assert (seen[0]["resourceType"], seen[0]["id"]) == ("Patient", pid)
    page = first
    while (link := next((x for x in page["link"] if x["relation"] == "next"), None)) is not None:
        resp = await api.client.get(URL(link["url"]).path_qs, headers=api.headers())
        assert resp.status == 200
        page = await resp.json()
        seen += resources(page)
    keys = [(r["resourceType"], r["id"]) for r in seen]
    assert len(keys) == len(set(keys)) == total
    assert ("Patient", record["other"]) not in keys
    assert all(t != "Practitioner" for t, _ in keys), "only the compartment, not what it cites"
    assert sum(t == "Observation" for t, _ in keys) == record["observations"]


async def test_everything_narrowed_by_type_and_since(api: Api, record: dict[str, Any]) -> None:
    pid = record["id"]
    observations = await get(api, f"Patient/{pid}/$everything?_type=Observation&_count=5")
    assert observations["total"] == record["observations"]
    assert {r["resourceType"] for r in resources(observations)} == {"Observation"}
    future = await get(api, f"Patient/{pid}/$everything?_since=2999-01-01T00:00:00Z")
    assert future["total"] == 0 and resources(future) == []
    past = await get(api, f"Patient/{pid}/$everything?_since=2000-01-01T00:00:00Z&_count=1")
    assert past["total"] > 1 and len(resources(past)) == 1
    everyone = await get(api, "Patient/$everything?_type=Patient")
    assert {r["id"] for r in resources(everyone)} == {pid, record["other"]}
    for bad in (f"Patient/{pid}/$everything?start=2020", f"Patient/{pid}/$everything?_type=Nope"):
        resp = await api.client.get(f"{BASE}/{bad}", headers=api.headers())
        assert resp.status in (400, 404)
        assert (await resp.json())["resourceType"] == "OperationOutcome"
    missing = await api.client.get(f"{BASE}/Patient/nobody/$everything", headers=api.headers())
    assert missing.status == 404
