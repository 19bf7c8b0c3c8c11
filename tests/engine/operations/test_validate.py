"""``$validate`` over HTTP on both storage adapters: every problem, 200 either way."""

from __future__ import annotations

from typing import Any

import orjson

from fhirbots.engine.fhir.integrity import IntegrityPolicy
from tests.engine.conftest import Api

BASE = "/fhir/R4"


async def validate(api: Api, path: str, body: Any = None, **query: str) -> tuple[int, Any]:
    resp = await api.client.post(
        f"{BASE}/{path}",
        data=None if body is None else orjson.dumps(body),
        params=query,
        headers=api.headers(),
    )
    return resp.status, await resp.json()


async def put(api: Api, resource: dict[str, Any]) -> None:
    resp = await api.client.put(
        f"{BASE}/{resource['resourceType']}/{resource['id']}",
        data=orjson.dumps(resource),
        headers=api.headers(),
    )
    assert resp.status in (200, 201), await resp.text()


def errors(outcome: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (issue["code"], (issue.get("expression") or [""])[0])
        for issue in outcome["issue"]
        if issue["severity"] == "error"
    ]


async def test_a_valid_resource_gets_an_information_issue(api: Api) -> None:
    status, outcome = await validate(api, "Patient/$validate", {"resourceType": "Patient"})
    assert status == 200 and outcome["resourceType"] == "OperationOutcome"
    assert [i["severity"] for i in outcome["issue"]] == ["information"]


async def test_every_problem_is_reported_not_only_the_first(api: Api) -> None:
    resource = {
        "resourceType": "Observation",
        "status": "weird",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/nobody"},
        "issued": "not-an-instant",
    }
    status, outcome = await validate(api, "Observation/$validate", resource)
    assert status == 200
    found = errors(outcome)
    assert ("structure", "Observation.issued") in found
    assert ("code-invalid", "Observation.status") in found
    # The references of a resource that does not parse are checked all the same.
    assert ("not-found", "Observation.subject") in found
    assert not any(i["severity"] == "information" for i in outcome["issue"])
    # Nothing was written.
    search = await api.client.get(f"{BASE}/Observation", headers=api.headers())
    assert (await search.json()).get("entry", []) == []


async def test_parameters_body_and_modes(api: Api) -> None:
    await put(api, {"resourceType": "Patient", "id": "a"})
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": {"resourceType": "Patient", "id": "b"}},
            {"name": "mode", "valueCode": "update"},
        ],
    }
    status, outcome = await validate(api, "Patient/a/$validate", body)
    assert status == 200 and errors(outcome) == [("invalid", "Patient.id")]
    status, outcome = await validate(
        api, "Patient/$validate", {"resourceType": "Patient"}, mode="update"
    )
    assert errors(outcome) == [("required", "")]
    status, outcome = await validate(api, "Patient/$validate", {"resourceType": "Basic"})
    assert errors(outcome) == [("invalid", "resourceType")]
    status, outcome = await validate(
        api, "Patient/$validate", {"resourceType": "Patient"}, mode="nope"
    )
    assert status == 400


async def test_delete_mode_names_the_referrers_that_block_it(api: Api) -> None:
    await put(api, {"resourceType": "Patient", "id": "a"})
    status, outcome = await validate(api, "Patient/a/$validate", mode="delete")
    assert status == 200 and [i["severity"] for i in outcome["issue"]] == ["information"]
    for oid in ("o1", "o2"):
        await put(
            api,
            {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "Patient/a"},
            },
        )
    status, outcome = await validate(api, "Patient/a/$validate", mode="delete")
    messages = [i["diagnostics"] for i in outcome["issue"] if i["severity"] == "error"]
    assert len(messages) == 2
    assert "Observation/o1" in messages[0] and "Observation/o2" in messages[1]
    status, outcome = await validate(api, "Patient/nobody/$validate", mode="delete")
    assert errors(outcome) == [("not-found", "")]
    # The settings decide what is checked.
    api.engine.fhir.integrity = IntegrityPolicy(on_write=False, on_delete=False)
    status, outcome = await validate(api, "Patient/a/$validate", mode="delete")
    assert not errors(outcome)
    status, outcome = await validate(
        api,
        "Observation/$validate",
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "Patient/nobody"},
        },
    )
    assert not errors(outcome)


async def test_a_types_own_checks_are_run(api: Api) -> None:
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "r",
        "criteria": "Observation?no-such-parameter=1",
        "channel": {"type": "rest-hook", "endpoint": "https://hooks.example/x"},
    }
    status, outcome = await validate(api, "Subscription/$validate", subscription)
    assert status == 200 and errors(outcome)
    assert all(code != "structure" for code, _ in errors(outcome))
