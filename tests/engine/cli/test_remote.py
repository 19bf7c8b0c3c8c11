"""HttpFhirGateway: a bot's calls as HTTP requests to a served engine."""

from __future__ import annotations

import pytest

from fhirbots.bots.errors import FhirGatewayError
from fhirbots.bots.gateway import CallContext
from fhirbots.engine.automation.tags import BOT_TAG_SYSTEM, EXECUTION_TAG_SYSTEM
from fhirbots.engine.cli.client import ClientSettings, FhirClient
from fhirbots.engine.cli.remote import HttpFhirGateway
from tests.engine.conftest import Api

CTX = CallContext(
    project="ignored",
    bot="Bot/local",
    execution_id="x9",
    author="Bot/local",
    trace_id="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
)


async def test_every_call_goes_over_http(api: Api) -> None:
    settings = ClientSettings(url=str(api.client.make_url("/fhir/R4")), token=api.token)
    async with FhirClient(settings) as client:
        gw = HttpFhirGateway(client)
        created = await gw.create(CTX, {"resourceType": "Patient", "gender": "female"})
        # A local run writes as its key: the bot tags are the engine's own bots' only.
        tags = {t["system"] for t in created["meta"].get("tag", [])}
        assert not tags & {BOT_TAG_SYSTEM, EXECUTION_TAG_SYSTEM}
        pid = created["id"]
        assert (await gw.read(CTX, "Patient", pid))["gender"] == "female"
        updated = await gw.update(CTX, {**created, "gender": "male"})
        assert updated["meta"]["versionId"] == "2"
        patch = [{"op": "replace", "path": "/gender", "value": "other"}]
        assert (await gw.patch(CTX, "Patient", pid, patch))["gender"] == "other"
        found = await gw.search(CTX, "Patient", {"gender": "other"})
        assert [e["resource"]["id"] for e in found["entry"]] == [pid]
        response = await gw.transaction(
            CTX,
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [
                    {
                        "resource": {"resourceType": "Patient"},
                        "request": {"method": "POST", "url": "Patient"},
                    }
                ],
            },
        )
        assert response["type"] == "transaction-response"
        await gw.delete(CTX, "Patient", pid)
        with pytest.raises(FhirGatewayError) as gone:
            await gw.read(CTX, "Patient", pid)
        assert gone.value.status == 410
        assert gone.value.outcome["resourceType"] == "OperationOutcome"
        with pytest.raises(FhirGatewayError) as invalid:
            await gw.update(CTX, {"resourceType": "Patient"})
        assert invalid.value.status == 400
