"""Tests of the CapabilityStatement, the OperationDefinitions it points at, and content
negotiation: what the statement announces is what the running API serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fhirbots.engine.api.negotiation import accepts_json
from fhirbots.engine.api.operation_definitions import DEFINITIONS, served_operations
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import API_PATH, Settings
from tests.engine.conftest import Api, open_storage

ISSUE_OPERATIONS = {
    "execute",
    "deploy",
    "explain",
    "status",
    "events",
    "resend",
    "get-ws-binding-token",
    "validate",
    "everything",
}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Api]:
    """An engine serving every route, operations of the dispatcher included."""
    engine = Engine(Settings(data_dir=tmp_path), storage=await open_storage("sqlite", tmp_path))
    token = await engine.create_project("p1", "Project one")
    await engine.start_dispatcher(run=False)
    client = TestClient(TestServer(engine.app()))
    await client.start_server()
    yield Api(client, engine, token)
    await client.close()
    await engine.close()


async def metadata(api: Api) -> dict[str, Any]:
    response = await api.client.get(f"{API_PATH}/metadata")
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_every_served_operation_has_a_definition_readable_at_its_url(served: Api) -> None:
    operations = served_operations(served.client.app)
    assert set(operations) >= ISSUE_OPERATIONS
    assert set(operations) <= set(DEFINITIONS), set(operations) - set(DEFINITIONS)
    statement = await metadata(served)
    announced: dict[str, str] = {}
    for resource in statement["rest"][0]["resource"]:
        for op in resource.get("operation", []):
            announced[op["name"]] = op["definition"]
    for op in statement["rest"][0].get("operation") or []:
        announced[op["name"]] = op["definition"]
    assert set(announced) == set(operations)
    for code, url in announced.items():
        path = url.split("://", 1)[1].split("/", 1)[1]
        response = await served.client.get(f"/{path}", headers=served.headers())
        assert response.status == 200, (code, url)
        definition = await response.json()
        assert definition["resourceType"] == "OperationDefinition"
        assert definition["url"] == url and definition["code"] == code
        assert definition["parameter"], code


async def test_operation_levels_and_types_come_from_the_routes(served: Api) -> None:
    operations = served_operations(served.client.app)
    status = operations["status"]
    assert status.types == {"Subscription"} and status.type_level and status.instance
    deploy = operations["deploy"]
    assert deploy.types == {"Bot"} and deploy.instance and not deploy.type_level
    statement = await metadata(served)
    by_type = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert {o["name"] for o in by_type["Bot"]["operation"]} >= {"execute", "deploy"}
    assert "deploy" not in {o["name"] for o in by_type["Patient"].get("operation", [])}


async def test_a_stored_operation_definition_is_still_read_from_the_project(served: Api) -> None:
    body = {
        "resourceType": "OperationDefinition",
        "id": "mine",
        "name": "Mine",
        "status": "draft",
        "kind": "operation",
        "code": "mine",
        "system": True,
        "type": False,
        "instance": False,
    }
    put = await served.client.put(
        f"{API_PATH}/OperationDefinition/mine", json=body, headers=served.headers()
    )
    assert put.status == 201, await put.text()
    read = await served.client.get(f"{API_PATH}/OperationDefinition/mine", headers=served.headers())
    assert (await read.json())["code"] == "mine"


async def test_includes_and_revincludes_are_listed_per_type(served: Api) -> None:
    by_type = {r["type"]: r for r in (await metadata(served))["rest"][0]["resource"]}
    assert "Observation:subject" in by_type["Observation"]["searchInclude"]
    assert "Observation:subject" in by_type["Patient"]["searchRevInclude"]
    assert "Observation:subject" not in by_type["Patient"]["searchInclude"]


async def test_system_interactions_and_patch_formats(served: Api) -> None:
    rest = (await metadata(served))["rest"][0]
    assert {i["code"] for i in rest["interaction"]} >= {
        "transaction",
        "batch",
        "history-system",
        "search-system",
    }
    statement = await metadata(served)
    assert set(statement["patchFormat"]) == {
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/fhir+json",
    }
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert patient["conditionalUpdate"] is True
    assert patient["conditionalDelete"] == "single"
    assert patient["conditionalCreate"] is True


@pytest.mark.parametrize(
    ("accept", "format_param", "expected"),
    [
        (None, None, True),
        ("application/fhir+json", None, True),
        ("application/fhir+xml", None, False),
        ("application/xml, text/xml", None, False),
        ("application/fhir+xml, application/fhir+json;q=0.5", None, True),
        ("application/fhir+json;q=0", None, False),
        ("text/html,application/xhtml+xml,*/*;q=0.8", None, True),
        ("application/fhir+json", "xml", False),
        ("application/fhir+xml", "json", True),
        (None, "application/fhir+json", True),
    ],
)
def test_accepts_json(accept: str | None, format_param: str | None, expected: bool) -> None:
    assert accepts_json(accept, format_param) is expected


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("metadata", {"Accept": "application/fhir+xml"}),
        ("metadata?_format=xml", {}),
        ("Patient", {"Accept": "application/fhir+xml"}),
    ],
)
async def test_asking_only_for_xml_is_a_406_never_json_with_200(
    served: Api, path: str, headers: dict[str, str]
) -> None:
    response = await served.client.get(
        f"{API_PATH}/{path}", headers={"Authorization": f"Bearer {served.token}", **headers}
    )
    assert response.status == 406
    body = await response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "FHIR JSON only" in body["issue"][0]["diagnostics"]
