"""The bot-author harness: the in-memory gateway and run_bot."""

from __future__ import annotations

import pytest

from fhirbots.bots.errors import BotCompileError, FhirGatewayError
from fhirbots.bots.gateway import CallContext
from fhirbots.bots.testing import BotHarness, InMemoryFhirGateway, make_bot, run_bot

CTX = CallContext(project="p", bot="Bot/b", execution_id="e", author="Bot/b")


async def test_crud_and_versions() -> None:
    gateway = InMemoryFhirGateway()
    created = await gateway.create(CTX, {"resourceType": "Patient", "id": "ignored"})
    assert created["id"] != "ignored"
    assert created["meta"]["versionId"] == "1"
    updated = await gateway.update(CTX, {**created, "gender": "male"})
    assert updated["meta"]["versionId"] == "2"
    patched = await gateway.patch(
        CTX, "Patient", created["id"], [{"op": "replace", "path": "/gender", "value": "female"}]
    )
    assert (patched["gender"], patched["meta"]["versionId"]) == ("female", "3")
    await gateway.delete(CTX, "Patient", created["id"])
    with pytest.raises(FhirGatewayError) as missing:
        await gateway.read(CTX, "Patient", created["id"])
    assert missing.value.status == 404
    assert [m for m, _ in gateway.calls] == ["create", "update", "patch", "delete", "read"]


async def test_bad_patch_and_update_without_id() -> None:
    gateway = InMemoryFhirGateway([{"resourceType": "Patient", "id": "a"}])
    with pytest.raises(FhirGatewayError, match="patch failed"):
        await gateway.patch(CTX, "Patient", "a", [{"op": "remove", "path": "/nope"}])
    with pytest.raises(FhirGatewayError, match="may not change"):
        await gateway.patch(CTX, "Patient", "a", [{"op": "replace", "path": "/id", "value": "b"}])
    with pytest.raises(FhirGatewayError, match="needs a resource id"):
        await gateway.update(CTX, {"resourceType": "Patient"})


async def test_search_parameters() -> None:
    gateway = InMemoryFhirGateway(
        [
            {
                "resourceType": "Observation",
                "id": "o1",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
                "subject": {"reference": "Patient/p1"},
            },
            {"resourceType": "Observation", "id": "o2", "status": "preliminary"},
            {
                "resourceType": "Patient",
                "id": "p1",
                "identifier": [{"system": "urn:mrn", "value": "123"}],
                "gender": "female",
            },
        ]
    )

    async def ids(kind: str, **params: str) -> list[str]:
        bundle = await gateway.search(CTX, kind, params)
        return [e["resource"]["id"] for e in bundle["entry"]]

    assert await ids("Observation", code="http://loinc.org|2823-3") == ["o1"]
    assert await ids("Observation", code="2823-3", patient="p1") == ["o1"]
    assert await ids("Observation", status="preliminary") == ["o2"]
    assert await ids("Observation", _id="o1,o2") == ["o1", "o2"]
    assert await ids("Patient", identifier="urn:mrn|123", gender="FEMALE") == ["p1"]
    assert await ids("Patient", identifier="urn:other|123") == []
    with pytest.raises(FhirGatewayError, match="not supported"):
        await ids("Patient", name="x")


async def test_transaction_resolves_placeholders() -> None:
    gateway = InMemoryFhirGateway()
    response = await gateway.transaction(
        CTX,
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:1",
                    "resource": {"resourceType": "Patient"},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": {
                        "resourceType": "Encounter",
                        "subject": {"reference": "urn:uuid:1"},
                    },
                    "request": {"method": "POST", "url": "Encounter"},
                },
            ],
        },
    )
    assert response["type"] == "transaction-response"
    (patient,) = gateway.all("Patient")
    (encounter,) = gateway.all("Encounter")
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"


def test_run_bot_outside_an_event_loop() -> None:
    gateway = InMemoryFhirGateway()
    result = run_bot(
        "def handler(fhir, event):\n"
        "    return fhir.create({'resourceType': 'Basic', 'code': {'text': event.input}})['id']\n",
        "hello",
        gateway=gateway,
    )
    assert result.ok
    stored = gateway.get("Basic", result.output)
    assert stored is not None and stored["code"]["text"] == "hello"


async def test_harness_refuses_like_a_deploy_and_accepts_bots() -> None:
    async with BotHarness() as harness:
        with pytest.raises(BotCompileError):
            await harness.run("import os\ndef handler(fhir, event):\n    pass\n")
        bot = make_bot("def handler(fhir, event):\n    return event.secrets\n", secret=["A"])
        result = await harness.run(bot, secrets={"A": "1", "B": "2"})
        assert result.output == {"A": "1"}
