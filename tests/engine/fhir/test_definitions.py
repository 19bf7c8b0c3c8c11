"""A project's terminology in search and criteria over HTTP, on both storage engines:
``:in``/``:not-in``/``:below``/``:above``, 422 naming what is missing, and the matcher's view."""

from __future__ import annotations

from typing import Any

from tests.engine.conftest import Api
from tests.subscriptions.search.test_terminology import (
    CODE_SYSTEM,
    CS,
    EVERYTHING,
    LOINC,
    SNOMED,
    VITALS,
    observation,
)

BASE = "/fhir/R4"


async def send(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await api.client.request(method, f"{BASE}/{path}", json=body, headers=api.headers())
    return resp.status, await resp.json()


async def ids(api: Api, search: str) -> list[str]:
    status, body = await send(api, "GET", search)
    assert status == 200, body
    return sorted(e["resource"]["id"] for e in body.get("entry", []))


async def store(api: Api, resource: dict[str, Any], resource_id: str) -> None:
    status, body = await send(api, "PUT", f"{resource['resourceType']}/{resource_id}", resource)
    assert status in (200, 201), body


async def test_terminology_modifiers_search(api: Api) -> None:
    for name, resource in [("cs", CODE_SYSTEM), ("vitals", VITALS), ("all", EVERYTHING)]:
        await store(api, resource, name)
    codes = [
        (LOINC, "8867-4"),
        (LOINC, "8302-2"),
        (SNOMED, "22298006"),
        (CS, "tachycardia"),
        (CS, "murmur"),
        (CS, "disorder"),
    ]
    for index, (system, code) in enumerate(codes):
        await store(api, observation(system, code), f"o{index}")
    assert await ids(api, "Observation?code:in=http://example.org/vs/vitals") == ["o0"]
    assert await ids(api, "Observation?code:in=http://example.org/vs/all") == ["o0", "o2", "o3"]
    assert await ids(api, "Observation?code:not-in=http://example.org/vs/all") == [
        "o1",
        "o4",
        "o5",
    ]
    assert await ids(api, f"Observation?code:below={CS}|heart") == ["o3", "o4"]
    assert await ids(api, f"Observation?code:above={CS}|tachycardia") == ["o3", "o5"]
    status, body = await send(api, "GET", "Observation?code:in=http://example.org/vs/missing")
    assert status == 422
    assert "http://example.org/vs/missing" in body["issue"][0]["diagnostics"]
    status, body = await send(api, "GET", "Observation?code:below=http://example.org/cs/x|a")
    assert status == 422 and "CodeSystem" in body["issue"][0]["diagnostics"]


async def test_implicit_system_and_dates_over_http(api: Api) -> None:
    await store(api, {"resourceType": "Patient", "gender": "male"}, "m")
    await store(api, {"resourceType": "Patient", "gender": "female"}, "f")
    gender = "http://hl7.org/fhir/administrative-gender"
    assert await ids(api, f"Patient?gender={gender}|male") == ["m"]
    period = {"start": "2020-01-15T08:00:00Z", "end": "2020-01-15T09:00:00Z"}
    await store(api, {**observation(LOINC, "1"), "effectivePeriod": period}, "p")
    assert await ids(api, "Observation?date=ge2020-01-15T09:00:00Z") == ["p"]
    assert await ids(api, "Observation?date=le2020-01") == ["p"]


async def test_criteria_need_their_value_set(api: Api) -> None:
    subscription = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "vitals",
        "criteria": "Observation?code:in=http://example.org/vs/vitals&_sort=-date",
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
    }
    status, body = await send(api, "POST", "Subscription", subscription)
    assert status == 422
    assert "ValueSet 'http://example.org/vs/vitals'" in body["issue"][0]["diagnostics"]
    await store(api, VITALS, "vitals")
    resp = await api.client.post(
        f"{BASE}/Subscription",
        json=subscription,
        headers=api.headers(Prefer="return=OperationOutcome"),
    )
    assert resp.status == 201, await resp.text()
    issues = (await resp.json())["issue"]
    warnings = [i for i in issues if i["severity"] == "warning"]
    assert len(warnings) == 1 and "_sort=-date" in warnings[0]["diagnostics"]
    for code, fires in [("8867-4", True), ("8302-2", False)]:
        status, explained = await send(
            api, "POST", "Subscription/$explain", observation(LOINC, code)
        )
        assert status == 200
        parts = {p["name"]: p for p in explained["parameter"][0]["part"]}
        assert parts["fires"]["valueBoolean"] is fires
        assert "_sort=-date" in parts["warning"]["valueString"]
