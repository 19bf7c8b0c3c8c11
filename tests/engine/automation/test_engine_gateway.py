"""EngineFhirGateway: a bot's calls through the engine's services, tagged, with causation."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbots.bots.errors import FhirGatewayError
from fhirbots.bots.gateway import CallContext
from fhirbots.engine.automation.engine_gateway import EngineFhirGateway, search_pairs
from fhirbots.engine.automation.tags import BOT_TAG_SYSTEM, EXECUTION_TAG_SYSTEM
from fhirbots.engine.runtime import Engine
from fhirbots.engine.storage.model import WriteContext
from fhirbots.schemas.events import CausationLink
from tests.engine.scenarios.bots import PROJECT, changes

EARLIER = CausationLink(bot="Bot/upstream", execution="e0")


def context(project: str = PROJECT, **changes: Any) -> CallContext:
    fields: dict[str, Any] = {
        "project": project,
        "bot": "Bot/b1",
        "execution_id": "x1",
        "author": "Bot/b1",
        "trace_id": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "causation": (EARLIER, CausationLink(bot="Bot/b1", execution="x1")),
    }
    fields.update(changes)
    return CallContext(**fields)


def gateway(engine: Engine) -> EngineFhirGateway:
    return EngineFhirGateway(engine.fhir, engine.search, engine._get_url, "http://h/fhir/R4")


def tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["system"]: t["code"] for t in resource["meta"].get("tag", [])}


def patient(family: str = "Chalmers") -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}], "gender": "female"}


async def test_create_is_tagged_and_carries_author_trace_and_causation(engine: Engine) -> None:
    created = await gateway(engine).create(context(), patient())
    assert created["id"] and created["meta"]["versionId"] == "1"
    assert tags(created) == {BOT_TAG_SYSTEM: "Bot/b1", EXECUTION_TAG_SYSTEM: "x1"}
    stored = await engine.fhir.read(PROJECT, "Patient", created["id"])
    assert stored.content == created
    [event] = await changes(engine)
    assert event.resource_id == created["id"] and event.interaction == "create"
    assert event.author == "Bot/b1"
    assert event.traceparent == context().trace_id
    assert event.causation == (EARLIER, CausationLink(bot="Bot/b1", execution="x1"))


async def test_update_replaces_earlier_bot_tags_and_keeps_others(engine: Engine) -> None:
    gw = gateway(engine)
    first = await gw.create(context(), patient())
    first["meta"]["tag"].append({"system": "urn:other", "code": "keep"})
    updated = await gw.update(context(execution_id="x2"), {**first, "gender": "male"})
    assert updated["meta"]["versionId"] == "2"
    assert updated["gender"] == "male"
    assert tags(updated) == {
        "urn:other": "keep",
        BOT_TAG_SYSTEM: "Bot/b1",
        EXECUTION_TAG_SYSTEM: "x2",
    }


async def test_patch_applies_tags_and_checks_the_version(engine: Engine) -> None:
    gw = gateway(engine)
    created = await gw.create(context(), patient())
    patched = await gw.patch(
        context(execution_id="x3"),
        "Patient",
        created["id"],
        [{"op": "replace", "path": "/gender", "value": "other"}],
    )
    assert patched["gender"] == "other" and patched["meta"]["versionId"] == "2"
    assert tags(patched)[EXECUTION_TAG_SYSTEM] == "x3"
    with pytest.raises(FhirGatewayError) as refused:
        await gw.patch(
            context(), "Patient", created["id"], [{"op": "replace", "path": "/id", "value": "z"}]
        )
    assert refused.value.status == 422


async def test_read_and_delete_translate_engine_errors(engine: Engine) -> None:
    gw = gateway(engine)
    with pytest.raises(FhirGatewayError) as missing:
        await gw.read(context(), "Patient", "nope")
    assert missing.value.status == 404
    assert missing.value.outcome["resourceType"] == "OperationOutcome"
    created = await gw.create(context(), patient())
    await gw.delete(context(), "Patient", created["id"])
    with pytest.raises(FhirGatewayError) as gone:
        await gw.read(context(), "Patient", created["id"])
    assert gone.value.status == 410
    with pytest.raises(FhirGatewayError) as unknown:
        await gw.read(context(), "NoSuchType", "x")
    assert unknown.value.status == 404


async def test_invalid_resource_is_422_with_the_element(engine: Engine) -> None:
    with pytest.raises(FhirGatewayError) as invalid:
        await gateway(engine).create(context(), {"resourceType": "Patient", "gender": 12})
    assert invalid.value.status == 422
    assert "Patient.gender" in invalid.value.outcome["issue"][0]["diagnostics"]


async def test_calls_stay_inside_the_project(engine: Engine) -> None:
    await engine.storage.ensure_project("p2", "Other")
    other = await engine.fhir.create("p2", patient("Other"), WriteContext(author="test"))
    assert other.stored is not None
    with pytest.raises(FhirGatewayError) as hidden:
        await gateway(engine).read(context(), "Patient", other.stored.id)
    assert hidden.value.status == 404
    found = await gateway(engine).search(context(), "Patient", {"family": "Other"})
    assert found["entry"] == []


async def test_search_uses_the_engines_search_parameters(engine: Engine) -> None:
    gw = gateway(engine)
    await gw.create(context(), patient("Chalmers"))
    await gw.create(context(), patient("Chalmers"))
    await gw.create(context(), patient("Baxter"))
    bundle = await gw.search(context(), "Patient", {"family": "chalm", "_count": 1})
    assert bundle["type"] == "searchset"
    assert len(bundle["entry"]) == 1
    assert bundle["entry"][0]["resource"]["name"][0]["family"] == "Chalmers"
    assert bundle["entry"][0]["fullUrl"].startswith("http://h/fhir/R4/Patient/")
    assert any(link["relation"] == "next" for link in bundle["link"])
    tagged = await gw.search(context(), "Patient", {"_tag": f"{BOT_TAG_SYSTEM}|Bot/b1"})
    assert len(tagged["entry"]) == 3
    with pytest.raises(FhirGatewayError) as bad:
        await gw.search(context(), "Patient", {"no-such-param": "x"})
    assert bad.value.status == 400


def test_search_pairs_repeat_list_values() -> None:
    assert search_pairs({"date": ["ge2020", "lt2021"], "active": True, "_count": 5}) == [
        ("date", "ge2020"),
        ("date", "lt2021"),
        ("active", "true"),
        ("_count", "5"),
    ]


async def test_transaction_is_atomic_tagged_and_resolves_references(engine: Engine) -> None:
    gw = gateway(engine)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                "resource": patient("Tx"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {
                    "resourceType": "Flag",
                    "status": "active",
                    "code": {"text": "check"},
                    "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
                },
                "request": {"method": "POST", "url": "Flag"},
            },
        ],
    }
    response = await gw.transaction(context(), bundle)
    assert response["type"] == "transaction-response"
    flag = response["entry"][1]["resource"]
    patient_id = response["entry"][0]["resource"]["id"]
    assert flag["subject"]["reference"] == f"Patient/{patient_id}"
    assert tags(flag)[BOT_TAG_SYSTEM] == "Bot/b1"
    assert all(e.causation[-1].execution == "x1" for e in await changes(engine))
    broken = {
        **bundle,
        "entry": [
            *bundle["entry"],
            {"resource": {"resourceType": "Flag"}, "request": {"method": "POST", "url": "Flag"}},
        ],
    }
    before = len(await changes(engine))
    with pytest.raises(FhirGatewayError) as refused:
        await gw.transaction(context(), broken)
    assert refused.value.status == 422
    assert len(await changes(engine)) == before
