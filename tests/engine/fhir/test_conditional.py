"""Conditional update, delete and patch (and conditional create by URL) over HTTP, on both
storage engines: the status for zero, one and several matches, in Bundles too, and two at
once creating one resource."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from tests.conftest import POSTGRES
from tests.engine.conftest import Api, open_storage

BASE = "/fhir/R4"


def patient(mrn: str, family: str = "Chalmers", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": mrn}],
        "name": [{"family": family}],
        **extra,
    }


async def call(api: Api, method: str, path: str, body: Any = None, **headers: str) -> Any:
    data = orjson.dumps(body) if body is not None else None
    return await api.client.request(
        method, f"{BASE}/{path}", data=data, headers=api.headers(**headers)
    )


async def families(api: Api, mrn: str) -> list[str]:
    resp = await call(api, "GET", f"Patient?identifier=urn:mrn|{mrn}")
    bundle = await resp.json()
    return [e["resource"]["name"][0]["family"] for e in bundle.get("entry", [])]


async def test_conditional_update_creates_updates_or_refuses(api: Api) -> None:
    created = await call(api, "PUT", "Patient?identifier=urn:mrn|1", patient("1"))
    assert created.status == 201
    pid = (await created.json())["id"]

    updated = await call(api, "PUT", "Patient?identifier=urn:mrn|1", patient("1", "Windsor"))
    assert updated.status == 200 and (await updated.json())["id"] == pid
    assert updated.headers["ETag"] == 'W/"2"'
    assert await families(api, "1") == ["Windsor"]

    other_id = await call(
        api, "PUT", "Patient?identifier=urn:mrn|1", patient("1", id="someone-else")
    )
    assert other_id.status == 400
    stale = await call(
        api, "PUT", "Patient?identifier=urn:mrn|1", patient("1"), **{"If-Match": 'W/"1"'}
    )
    assert stale.status == 412

    await call(api, "POST", "Patient", patient("1", "Twin"))
    several = await call(api, "PUT", "Patient?identifier=urn:mrn|1", patient("1", "Third"))
    assert several.status == 412
    assert (await several.json())["resourceType"] == "OperationOutcome"
    assert sorted(await families(api, "1")) == ["Twin", "Windsor"]

    no_search = await call(api, "PUT", "Patient", patient("1"))
    assert no_search.status == 400


async def test_conditional_delete_single_by_default(api: Api) -> None:
    nothing = await call(api, "DELETE", "Patient?identifier=urn:mrn|none")
    assert nothing.status == 204
    await call(api, "POST", "Patient", patient("2"))
    await call(api, "POST", "Patient", patient("2", "Twin"))
    several = await call(api, "DELETE", "Patient?identifier=urn:mrn|2")
    assert several.status == 412
    assert len(await families(api, "2")) == 2
    one = await call(api, "DELETE", "Patient?identifier=urn:mrn|2&family=Twin")
    assert one.status == 204
    assert await families(api, "2") == ["Chalmers"]


@pytest.fixture(params=["sqlite", POSTGRES])
async def api_deleting_several(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """An engine with FHIRBOTS_CONDITIONAL_DELETE_MULTIPLE on."""
    storage = await open_storage(request.param, tmp_path)
    settings = Settings.from_env({"FHIRBOTS_CONDITIONAL_DELETE_MULTIPLE": "true"})
    engine = Engine(settings.with_overrides(data_dir=tmp_path), storage=storage)
    token = await engine.create_project("p1", "Project one")
    client = TestClient(TestServer(engine.app()))
    await client.start_server()
    yield Api(client, engine, token)
    await client.close()
    await engine.close()


async def test_conditional_delete_of_several_when_allowed(api_deleting_several: Api) -> None:
    api = api_deleting_several
    for family in ("A", "B", "C"):
        await call(api, "POST", "Patient", patient("3", family))
    await call(api, "POST", "Patient", patient("4"))
    resp = await call(api, "DELETE", "Patient?identifier=urn:mrn|3")
    assert resp.status == 204
    assert await families(api, "3") == []
    assert await families(api, "4") == ["Chalmers"]


async def test_conditional_patch(api: Api) -> None:
    missing = await call(
        api,
        "PATCH",
        "Patient?identifier=urn:mrn|5",
        {"active": True},
        **{"Content-Type": "application/merge-patch+json"},
    )
    assert missing.status == 404
    await call(api, "POST", "Patient", patient("5"))
    patched = await call(
        api,
        "PATCH",
        "Patient?identifier=urn:mrn|5",
        {"active": True},
        **{"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status == 200 and (await patched.json())["active"] is True


async def test_post_with_a_query_is_a_conditional_create(api: Api) -> None:
    first = await call(api, "POST", "Patient?identifier=urn:mrn|6", patient("6"))
    second = await call(api, "POST", "Patient?identifier=urn:mrn|6", patient("6", "Again"))
    assert (first.status, second.status) == (201, 200)
    assert (await first.json())["id"] == (await second.json())["id"]
    assert await families(api, "6") == ["Chalmers"]
    both = await call(
        api,
        "POST",
        "Patient?identifier=urn:mrn|6",
        patient("6"),
        **{"If-None-Exist": "identifier=urn:mrn|6"},
    )
    assert both.status == 400
    assert "If-None-Exist" in (await both.json())["issue"][0]["diagnostics"]
    formatted = await call(api, "POST", "Patient?_format=json", patient("7"))
    assert formatted.status == 201


async def test_two_conditional_creates_at_once_make_one_resource(api: Api) -> None:
    answers = await asyncio.gather(
        *(
            call(api, method, "Patient?identifier=urn:mrn|8", patient("8"))
            for method in ("POST", "POST", "PUT", "PUT", "POST", "PUT")
        )
    )
    statuses = sorted(a.status for a in answers)
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {200, 201}
    assert await families(api, "8") == ["Chalmers"]


async def test_conditional_entries_in_a_transaction_and_a_batch(api: Api) -> None:
    await call(api, "POST", "Patient", patient("9"))
    await call(api, "POST", "Patient", patient("10"))
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:p9",
                "resource": patient("9", "Updated"),
                "request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|9"},
            },
            {
                "resource": patient("11", "New"),
                "request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|11"},
            },
            {"request": {"method": "DELETE", "url": "Patient?identifier=urn:mrn|10"}},
            {"request": {"method": "DELETE", "url": "Patient?identifier=urn:mrn|none"}},
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "urn:uuid:p9"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    resp = await call(api, "POST", "", transaction)
    assert resp.status == 200, await resp.text()
    statuses = [e["response"]["status"] for e in (await resp.json())["entry"]]
    assert statuses == ["200 OK", "201 Created", "204 No Content", "204 No Content", "201 Created"]
    assert await families(api, "9") == ["Updated"]
    assert await families(api, "11") == ["New"]
    assert await families(api, "10") == []

    nine = (await (await call(api, "GET", "Patient?identifier=urn:mrn|9")).json())["entry"][0]
    twice = await call(
        api,
        "POST",
        "",
        {
            **transaction,
            "entry": [
                transaction["entry"][0],
                {"request": {"method": "DELETE", "url": f"Patient/{nine['resource']['id']}"}},
            ],
        },
    )
    assert twice.status == 400
    assert "both write" in (await twice.json())["issue"][0]["diagnostics"]

    await call(api, "POST", "Patient", patient("9", "Twin"))
    refused = await call(
        api,
        "POST",
        "",
        {**transaction, "entry": transaction["entry"][:1]},
    )
    assert refused.status == 412
    assert "Bundle.entry[0]" in (await refused.json())["issue"][0]["diagnostics"]

    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": patient("12"),
                "request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|12"},
            },
            {"request": {"method": "DELETE", "url": "Patient?identifier=urn:mrn|9"}},
            {
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [
                        {
                            "name": "operation",
                            "part": [
                                {"name": "type", "valueCode": "add"},
                                {"name": "path", "valueString": "Patient"},
                                {"name": "name", "valueString": "active"},
                                {"name": "value", "valueBoolean": True},
                            ],
                        }
                    ],
                },
                "request": {"method": "PATCH", "url": "Patient?identifier=urn:mrn|11"},
            },
        ],
    }
    resp = await call(api, "POST", "", batch)
    entries = (await resp.json())["entry"]
    assert [e["response"]["status"] for e in entries] == ["201 Created", "412", "200 OK"]


@pytest.mark.integration
async def test_two_api_processes_on_one_postgres_create_one_resource(tmp_path: Path) -> None:
    """Two engines with pools of their own on one database (as two API processes): only the
    advisory lock keeps their conditional creates from both creating."""
    engines: list[Engine] = []
    clients: list[TestClient[Any, Any]] = []
    try:
        for name in ("a", "b"):
            storage = await open_storage("postgres", tmp_path) if not engines else None
            if storage is None:
                from fhirbots.engine.storage.postgres import PostgresStorage
                from fhirbots.engine.storage.search_index import SqlSearchIndexer
                from tests.conftest import postgres_dsn

                storage = PostgresStorage(postgres_dsn(), indexer=SqlSearchIndexer())
                await storage.open()
            engines.append(Engine(Settings(data_dir=tmp_path / name), storage=storage))
            client = TestClient(TestServer(engines[-1].app()))
            await client.start_server()
            clients.append(client)
        token = await engines[0].create_project("p1", "Project one")
        apis = [Api(client, engine, token) for client, engine in zip(clients, engines, strict=True)]
        for round_ in range(3):
            answers = await asyncio.gather(
                *(
                    call(
                        apis[i % 2],
                        method,
                        f"Patient?identifier=urn:mrn|r{round_}",
                        patient(f"r{round_}"),
                    )
                    for i, method in enumerate(("POST", "PUT", "POST", "PUT", "POST", "PUT"))
                )
            )
            statuses = sorted(a.status for a in answers)
            assert statuses.count(201) == 1, statuses
            assert len(await families(apis[1], f"r{round_}")) == 1
    finally:
        for client in clients:
            await client.close()
        for engine in engines:
            await engine.close()
