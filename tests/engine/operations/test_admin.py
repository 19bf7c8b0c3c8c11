"""The admin API over HTTP on both storage engines: projects and keys for an admin key only,
scoped keys held to their scope, revocation refused at once (by a second engine on the same
PostgreSQL database too), last-used times, and the bot tags kept out of REST writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fhirbots.engine.automation.tags import BOT_TAG_SYSTEM, EXECUTION_TAG_SYSTEM
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from tests.engine.conftest import Api, open_storage

BASE = "/fhir/R4"
ADMIN = "/admin"


async def call(api: Api, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    data = orjson.dumps(body) if body is not None else None
    return await api.client.request(method, path, data=data, headers=api.headers(token))


async def new_project(api: Api, name: str) -> tuple[str, str]:
    """Create project ``name`` as the operator; its first key's (id, secret)."""
    answer = await call(api, "POST", f"{ADMIN}/projects", {"id": name, "name": name.title()})
    assert answer.status == 201, await answer.text()
    key = (await answer.json())["key"]
    assert key["secret"].startswith("fhb_") and not key["admin"] and key["scope"] is None
    return key["id"], key["secret"]


async def new_key(api: Api, project: str, scope: Any = None) -> tuple[str, str]:
    body = {"project": project, "name": "k", "scope": scope}
    answer = await call(api, "POST", f"{ADMIN}/keys", body)
    assert answer.status == 201, await answer.text()
    key = (await answer.json())["key"]
    return key["id"], key["secret"]


async def test_the_operator_creates_projects_and_keys(api: Api) -> None:
    key_id, secret = await new_project(api, "acme")
    again = await call(api, "POST", f"{ADMIN}/projects", {"id": "acme"})
    assert again.status == 409
    bad = await call(api, "POST", f"{ADMIN}/projects", {"id": "../x"})
    assert bad.status == 422
    projects = await (await call(api, "GET", f"{ADMIN}/projects")).json()
    assert "acme" in {p["id"] for p in projects["projects"]}
    created = await call(api, "POST", f"{BASE}/Patient", {"resourceType": "Patient"}, secret)
    assert created.status == 201
    listed = await (await call(api, "GET", f"{ADMIN}/keys?project=acme")).json()
    assert [k["id"] for k in listed["keys"]] == [key_id]
    assert "secret" not in listed["keys"][0]
    assert secret not in orjson.dumps(listed).decode()
    unknown = await call(api, "POST", f"{ADMIN}/keys", {"project": "nope"})
    assert unknown.status == 404
    bad_scope = await call(
        api, "POST", f"{ADMIN}/keys", {"project": "acme", "scope": {"interactions": ["fly"]}}
    )
    assert bad_scope.status == 422
    assert "fly" in (await bad_scope.json())["issue"][0]["diagnostics"]
    bad_type = await call(
        api, "POST", f"{ADMIN}/keys", {"project": "acme", "scope": {"resourceTypes": ["Nope"]}}
    )
    assert bad_type.status == 422


async def test_project_keys_get_403_on_every_admin_route_and_learn_nothing(api: Api) -> None:
    key_id, secret = await new_project(api, "acme")
    scoped_id, scoped = await new_key(api, "acme", {"interactions": ["read"]})
    routes = [
        ("GET", f"{ADMIN}/projects", None),
        ("POST", f"{ADMIN}/projects", {"id": "mine"}),
        ("GET", f"{ADMIN}/keys", None),
        ("GET", f"{ADMIN}/keys?project=p1", None),
        ("POST", f"{ADMIN}/keys", {"project": "p1"}),
        ("POST", f"{ADMIN}/keys/{key_id}/revoke", None),
    ]
    for token in (secret, scoped):
        for method, path, body in routes:
            answer = await call(api, method, path, body, token)
            assert answer.status == 403, (method, path, answer.status)
            text = await answer.text()
            assert "p1" not in text and "Project one" not in text and key_id not in text
    projects = await (await call(api, "GET", f"{ADMIN}/projects")).json()
    assert "mine" not in {p["id"] for p in projects["projects"]}
    keys = await (await call(api, "GET", f"{ADMIN}/keys?project=acme")).json()
    assert {k["id"] for k in keys["keys"]} == {key_id, scoped_id}
    assert all(k["revoked"] is None for k in keys["keys"])


async def test_a_scoped_key_is_held_to_its_scope(api: Api) -> None:
    await new_project(api, "acme")
    _, writer = await new_key(api, "acme")
    patient = await call(api, "POST", f"{BASE}/Patient", {"resourceType": "Patient"}, writer)
    pid = (await patient.json())["id"]
    _, reader = await new_key(
        api, "acme", {"resourceTypes": ["Patient"], "interactions": ["read", "search"]}
    )
    allowed = [("GET", f"{BASE}/Patient/{pid}"), ("GET", f"{BASE}/Patient?_id={pid}")]
    for method, path in allowed:
        answer = await call(api, method, path, token=reader)
        assert answer.status == 200, (method, path, await answer.text())
    refused: list[tuple[str, str, Any]] = [
        ("POST", f"{BASE}/Patient", {"resourceType": "Patient"}),
        ("PUT", f"{BASE}/Patient/{pid}", {"resourceType": "Patient", "id": pid}),
        ("DELETE", f"{BASE}/Patient/{pid}", None),
        ("GET", f"{BASE}/Patient/{pid}/_history", None),
        ("GET", f"{BASE}/Patient/{pid}/_history/1", None),
        ("GET", f"{BASE}/Observation", None),
        ("GET", f"{BASE}/Observation/x", None),
        ("GET", f"{BASE}/_history", None),
        ("GET", f"{BASE}?_id={pid}", None),
        ("POST", f"{BASE}/Patient/$validate", {"resourceType": "Patient"}),
        (
            "POST",
            BASE,
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {"request": {"method": "GET", "url": f"Patient/{pid}"}},
                    {
                        "resource": {"resourceType": "Flag", "status": "active"},
                        "request": {"method": "POST", "url": "Flag"},
                    },
                ],
            },
        ),
        (
            "POST",
            BASE,
            {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [{"request": {"method": "GET", "url": "Observation?code=x"}}],
            },
        ),
    ]
    for method, path, body in refused:
        answer = await call(api, method, path, body, reader)
        assert answer.status == 403, (method, path, answer.status, await answer.text())
    readable = await call(
        api,
        "POST",
        BASE,
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": f"Patient/{pid}"}}],
        },
        reader,
    )
    assert readable.status == 200
    history = await call(api, "GET", f"{BASE}/Patient/{pid}/_history", token=writer)
    assert history.status == 200 and (await history.json())["total"] == 1  # nothing was written


async def test_a_revoked_key_gets_401_at_once_and_use_is_recorded(api: Api) -> None:
    key_id, secret = await new_project(api, "acme")
    first = await call(api, "GET", f"{BASE}/Patient", token=secret)
    assert first.status == 200

    async def last_used() -> str | None:
        keys = await (await call(api, "GET", f"{ADMIN}/keys?project=acme")).json()
        used: str | None = next(k["lastUsed"] for k in keys["keys"] if k["id"] == key_id)
        return used

    from tests.waiting import eventually

    used = await eventually(last_used, "the key's last use to be recorded")
    again = await call(api, "GET", f"{BASE}/Patient", token=secret)
    assert again.status == 200
    assert await last_used() == used  # within the minute: not written again
    revoked = await call(api, "POST", f"{ADMIN}/keys/{key_id}/revoke")
    assert revoked.status == 200
    assert (await revoked.json())["key"]["revoked"] is not None
    refused = await call(api, "GET", f"{BASE}/Patient", token=secret)
    assert refused.status == 401
    missing = await call(api, "POST", f"{ADMIN}/keys/no-such-key/revoke")
    assert missing.status == 404


@pytest.mark.integration
async def test_a_key_revoked_through_one_engine_is_refused_by_another(tmp_path: Path) -> None:
    """Two engines (as two API processes) on one PostgreSQL database."""
    from fhirbots.engine.storage.postgres import PostgresStorage
    from fhirbots.engine.storage.search_index import SqlSearchIndexer
    from tests.conftest import postgres_dsn

    first_storage = await open_storage("postgres", tmp_path)  # emptied
    second_storage = PostgresStorage(postgres_dsn(), indexer=SqlSearchIndexer())
    await second_storage.open()
    engines = [
        Engine(Settings(data_dir=tmp_path / "a"), storage=first_storage),
        Engine(Settings(data_dir=tmp_path / "b"), storage=second_storage),
    ]
    clients = [TestClient(TestServer(e.app())) for e in engines]
    try:
        for client in clients:
            await client.start_server()
        operator = await engines[0].create_project("ops", "Operators")
        one, two = (Api(c, e, operator) for c, e in zip(clients, engines, strict=True))
        key_id, secret = await new_project(one, "acme")
        for api in (one, two):
            assert (await call(api, "GET", f"{BASE}/Patient", token=secret)).status == 200
        revoked = await call(one, "POST", f"{ADMIN}/keys/{key_id}/revoke")
        assert revoked.status == 200
        for api in (two, one):
            assert (await call(api, "GET", f"{BASE}/Patient", token=secret)).status == 401
    finally:
        for client in clients:
            await client.close()
        for engine in engines:
            await engine.close()


def _tags(resource: dict[str, Any]) -> set[str]:
    return {t.get("system", "") for t in resource.get("meta", {}).get("tag", [])}


async def test_rest_writes_cannot_carry_the_bot_tags(api: Api) -> None:
    """Stripped from creates, updates and Bundle entries (escaped slashes too); a PATCH that
    names them is refused with 422."""
    tags = [
        {"system": BOT_TAG_SYSTEM, "code": "Bot/forged"},
        {"system": EXECUTION_TAG_SYSTEM, "code": "x"},
        {"system": "urn:other", "code": "kept"},
    ]
    patient = {"resourceType": "Patient", "meta": {"tag": tags}}
    created = await call(api, "POST", f"{BASE}/Patient", patient)
    assert created.status == 201
    body = await created.json()
    assert _tags(body) == {"urn:other"}
    pid = body["id"]
    stored = await (await call(api, "GET", f"{BASE}/Patient/{pid}")).json()
    assert _tags(stored) == {"urn:other"}
    escaped = orjson.dumps({**patient, "id": pid}).replace(b"/", b"\\/")
    updated = await api.client.put(f"{BASE}/Patient/{pid}", data=escaped, headers=api.headers())
    assert updated.status == 200, await updated.text()
    assert _tags(await updated.json()) == {"urn:other"}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**patient, "id": "t1"},
                "request": {"method": "PUT", "url": "Patient/t1"},
            },
            {"resource": patient, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    answer = await call(api, "POST", BASE, bundle)
    assert answer.status == 200, await answer.text()
    t1 = await (await call(api, "GET", f"{BASE}/Patient/t1")).json()
    assert _tags(t1) == {"urn:other"}
    found = await (
        await call(api, "GET", f"{BASE}/Patient?_tag={BOT_TAG_SYSTEM}|Bot/forged")
    ).json()
    assert found.get("total", len(found.get("entry", []))) == 0
    patch = [
        {"op": "add", "path": "/meta/tag/-", "value": {"system": BOT_TAG_SYSTEM, "code": "Bot/x"}}
    ]
    refused = await api.client.patch(
        f"{BASE}/Patient/{pid}",
        data=orjson.dumps(patch),
        headers={**api.headers(), "Content-Type": "application/json-patch+json"},
    )
    assert refused.status == 422
    assert BOT_TAG_SYSTEM in (await refused.json())["issue"][0]["diagnostics"]


async def test_a_scoped_key_cannot_sign_in_to_the_dashboard(api: Api) -> None:
    """The dashboard's pages are not checked against a key's scope: a scoped key stays out."""
    await new_project(api, "acme")
    _, reader = await new_key(api, "acme", {"interactions": ["read"]})
    _, plain = await new_key(api, "acme")
    refused = await api.client.post("/dashboard/login", data={"key": reader, "next": "/dashboard/"})
    assert refused.status == 401
    assert "scoped API key cannot sign in" in await refused.text()
    admitted = await api.client.post(
        "/dashboard/login", data={"key": plain, "next": "/dashboard/"}, allow_redirects=False
    )
    assert admitted.status == 303


async def test_a_bundle_patch_entry_cannot_set_the_bot_tags(api: Api) -> None:
    created = await call(api, "POST", f"{BASE}/Patient", {"resourceType": "Patient"})
    pid = (await created.json())["id"]
    fhirpath_patch = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "add"},
                    {"name": "path", "valueString": "Patient.meta"},
                    {"name": "name", "valueString": "tag"},
                    {"name": "value", "valueCoding": {"system": BOT_TAG_SYSTEM, "code": "Bot/x"}},
                ],
            }
        ],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": fhirpath_patch, "request": {"method": "PATCH", "url": f"Patient/{pid}"}}
        ],
    }
    escaped = orjson.dumps(bundle).replace(b"/", b"\\/")
    refused = await api.client.post(BASE, data=escaped, headers=api.headers())
    assert refused.status == 422, await refused.text()
    stored = await (await call(api, "GET", f"{BASE}/Patient/{pid}")).json()
    assert stored["meta"]["versionId"] == "1" and not _tags(stored)
