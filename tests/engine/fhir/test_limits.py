"""Tests of the request limits: bytes per resource, entries per Bundle, bytes a Bundle's reads
may answer with; over the API and the bots' gateway path alike (both go through the service)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fhirbots.engine.fhir.limits import (
    PayloadTooLarge,
    RequestLimits,
    ResponseBudget,
    ResponseTooLarge,
)
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import API_PATH, Settings
from tests.conftest import POSTGRES
from tests.engine.conftest import Api, open_storage

LIMITS = {"max_resource_bytes": 2048, "max_bundle_entries": 5, "max_response_bytes": 8192}


def patient(padding: int = 0) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": "x" * padding or "Doe"}]}


def test_limits_come_from_settings() -> None:
    limits = RequestLimits.from_settings(Settings(**LIMITS))  # type: ignore[arg-type]
    assert (limits.max_resource_bytes, limits.max_bundle_entries) == (2048, 5)
    assert limits.max_response_bytes == 8192


def test_a_resource_over_the_bound_is_named_with_the_setting() -> None:
    limits = RequestLimits(max_resource_bytes=100)
    limits.check_resources([patient()])
    with pytest.raises(PayloadTooLarge, match=r"Bundle.entry\[1\] is \d+ bytes.*RESOURCE_BYTES"):
        limits.check_resources([patient(), patient(200)], ["Bundle.entry[0]", "Bundle.entry[1]"])


def test_the_budget_refuses_once_spent() -> None:
    budget = ResponseBudget(RequestLimits(max_response_bytes=100))
    budget.spend({"a": "x" * 40})
    with pytest.raises(ResponseTooLarge, match=r"first 2 reads.*MAX_RESPONSE_BYTES"):
        budget.spend({"b": "x" * 60})


@pytest.fixture(params=["sqlite", POSTGRES])
async def limited(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """A served engine with small limits, on each storage engine."""
    storage = await open_storage(request.param, tmp_path)
    engine = Engine(Settings(data_dir=tmp_path, **LIMITS), storage=storage)  # type: ignore[arg-type]
    token = await engine.create_project("p1", "Project one")
    client = TestClient(TestServer(engine.app()))
    await client.start_server()
    yield Api(client, engine, token)
    await client.close()
    await engine.close()


async def outcome(response: Any) -> str:
    body = await response.json()
    assert body["resourceType"] == "OperationOutcome"
    return " ".join(issue["diagnostics"] for issue in body["issue"])


def bundle(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def post(resource: dict[str, Any]) -> dict[str, Any]:
    return {"resource": resource, "request": {"method": "POST", "url": "Patient"}}


@pytest.mark.integration
async def test_an_over_large_resource_is_refused_and_not_stored(limited: Api) -> None:
    client = limited.client
    response = await client.post(
        f"{API_PATH}/Patient", json=patient(4000), headers=limited.headers()
    )
    assert response.status == 413
    assert "FHIRBOTS_MAX_RESOURCE_BYTES" in await outcome(response)
    transaction = bundle("transaction", [post(patient()), post(patient(4000))])
    response = await client.post(f"{API_PATH}/", json=transaction, headers=limited.headers())
    assert response.status == 413
    assert "Bundle.entry[1]" in await outcome(response)
    found = await client.get(f"{API_PATH}/Patient?_summary=count", headers=limited.headers())
    assert (await found.json())["total"] == 0


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["batch", "transaction"])
async def test_a_bundle_over_the_entry_bound_is_refused_whole(limited: Api, kind: str) -> None:
    client = limited.client
    response = await client.post(
        f"{API_PATH}/",
        json=bundle(kind, [post(patient()) for _ in range(6)]),
        headers=limited.headers(),
    )
    assert response.status == 413
    assert "6 entries" in await outcome(response)
    assert "FHIRBOTS_MAX_BUNDLE_ENTRIES" in await outcome(response)
    found = await client.get(f"{API_PATH}/Patient?_summary=count", headers=limited.headers())
    assert (await found.json())["total"] == 0


@pytest.mark.integration
async def test_reads_of_a_batch_answer_within_the_response_bound(limited: Api) -> None:
    client = limited.client
    written = bundle("batch", [post(patient(1500)) for _ in range(5)])
    response = await client.post(f"{API_PATH}/", json=written, headers=limited.headers())
    assert response.status == 200
    reads = [{"request": {"method": "GET", "url": "Patient?_count=2"}} for _ in range(5)]
    response = await client.post(
        f"{API_PATH}/", json=bundle("batch", reads), headers=limited.headers()
    )
    assert response.status == 400
    assert "FHIRBOTS_MAX_RESPONSE_BYTES" in await outcome(response)
    small = [{"request": {"method": "GET", "url": "Patient?_count=1"}}]
    response = await client.post(
        f"{API_PATH}/", json=bundle("batch", small), headers=limited.headers()
    )
    assert response.status == 200


@pytest.mark.integration
async def test_a_search_page_stops_at_the_response_bound_and_links_on(limited: Api) -> None:
    client = limited.client
    batch = bundle("batch", [post(patient(1900)) for _ in range(5)])
    response = await client.post(f"{API_PATH}/", json=batch, headers=limited.headers())
    assert response.status == 200
    seen: list[str] = []
    url: str | None = f"{API_PATH}/Patient?_count=5&_sort=_id"
    pages = 0
    while url is not None:
        page = await (await client.get(url, headers=limited.headers())).json()
        assert len(page.get("entry", [])) <= 5
        seen += [entry["resource"]["id"] for entry in page.get("entry", [])]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = following[0].split("://", 1)[1].split("/", 1)[1] if following else None
        url = f"/{url}" if url else None
        pages += 1
    assert pages >= 2, "8,192 bytes hold fewer than five 1,900-byte patients"
    assert len(seen) == len(set(seen)) == 5


@pytest.mark.integration
async def test_inclusions_past_the_response_bound_are_refused(limited: Api) -> None:
    client = limited.client
    put = await client.put(
        f"{API_PATH}/Patient/p",
        json={"resourceType": "Patient", "id": "p"},
        headers=limited.headers(),
    )
    assert put.status == 201
    observations = [
        {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x" * 1500},
                "subject": {"reference": "Patient/p"},
            },
            "request": {"method": "POST", "url": "Observation"},
        }
        for _ in range(5)
    ]
    written = await client.post(
        f"{API_PATH}/", json=bundle("batch", observations), headers=limited.headers()
    )
    assert written.status == 200
    url = f"{API_PATH}/Patient?_id=p&_revinclude=Observation:subject"
    refused = await client.get(url, headers=limited.headers())
    assert refused.status == 400
    assert "FHIRBOTS_MAX_RESPONSE_BYTES" in await outcome(refused)
    alone = await client.get(f"{API_PATH}/Patient?_id=p", headers=limited.headers())
    assert alone.status == 200
