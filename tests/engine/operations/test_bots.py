"""The bot endpoints over HTTP: the Bot type, its write check, $deploy, $execute, async jobs."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import ClientResponse, FormData

from fhirbots.engine.fhir.validator_pool import POOL_THRESHOLD
from fhirbots.engine.operations.bots import DEPLOY_HEADER, EXECUTION_HEADER
from tests.engine.conftest import Api
from tests.engine.scenarios.bots import bot_resource
from tests.waiting import eventually

BASE = "/fhir/R4"

ECHO = """
def handler(fhir, event):
    print("got", event.content_type)
    return {"input": event.input, "type": event.content_type, "requester": event.requester}
"""


async def post(api: Api, path: str, body: Any, content_type: str = "application/fhir+json") -> Any:
    data = body if isinstance(body, str | bytes) else orjson.dumps(body)
    return await api.client.post(
        f"{BASE}/{path}", data=data, headers=api.headers(**{"Content-Type": content_type})
    )


async def create_bot(api: Api, code: str = ECHO, **fields: Any) -> dict[str, Any]:
    resp = await post(api, "Bot", bot_resource(code, **fields))
    assert resp.status == 201, await resp.text()
    created: dict[str, Any] = await resp.json()
    return created


async def test_bot_is_a_resource_type_listed_in_the_capability_statement(api: Api) -> None:
    metadata = await (await api.client.get(f"{BASE}/metadata")).json()
    assert "Bot" in {r["type"] for r in metadata["rest"][0]["resource"]}
    bot = await create_bot(api, name="echo", cronString="*/5 * * * *")
    assert bot["resourceType"] == "Bot" and bot["meta"]["versionId"] == "1"
    found = await (await api.client.get(f"{BASE}/Bot?name=echo", headers=api.headers())).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [bot["id"]]


async def test_bot_in_a_transaction_large_enough_for_the_validator_pool(api: Api) -> None:
    # As `serve` does: workers started and ready, so this Bundle is validated in spawned
    # processes, which know only the types the validation facade knows by construction.
    api.engine.validator.start()
    ready = await asyncio.gather(*(asyncio.wrap_future(f) for f in api.engine.validator.warm()))
    assert ready, "the validator pool did not start"
    patients = [
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
        for _ in range(POOL_THRESHOLD)
    ]
    bot = {
        "resource": bot_resource(ECHO, name="pooled"),
        "request": {"method": "POST", "url": "Bot"},
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [bot, *patients]}
    resp = await post(api, "", bundle)
    assert resp.status == 200, await resp.text()
    entries = (await resp.json())["entry"]
    assert {e["response"]["status"] for e in entries} == {"201 Created"}
    location = entries[0]["response"]["location"].rsplit("/_history", 1)[0]
    stored = await api.client.get(f"{BASE}/{location}", headers=api.headers())
    assert stored.status == 200
    assert (await stored.json())["name"] == "pooled"


async def test_code_refused_by_the_sandbox_is_422_with_line_and_column(api: Api) -> None:
    code = "def handler(fhir, event):\n    return event.__class__\n"
    resp = await post(api, "Bot", bot_resource(code))
    assert resp.status == 422
    issue = (await resp.json())["issue"][0]
    assert issue["expression"] == ["Bot.code"]
    assert issue["diagnostics"].startswith("Bot.code line 2, column 12: ")
    assert "__class__" in issue["diagnostics"]
    syntax = await post(api, "Bot", bot_resource("def handler(fhir, event)\n    return 1\n"))
    assert syntax.status == 422
    assert "line 1" in (await syntax.json())["issue"][0]["diagnostics"]


async def test_bad_cron_string_is_refused(api: Api) -> None:
    resp = await post(api, "Bot", bot_resource(ECHO, cronString="61 * * * *"))
    assert resp.status == 422
    issue = (await resp.json())["issue"][0]
    assert issue["expression"] == ["Bot.cronString"] and "minute" in issue["diagnostics"]


async def test_deploy_makes_a_new_version_and_refuses_bad_code(api: Api) -> None:
    bot = await create_bot(api)
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "code", "valueString": "def handler(fhir, event):\n    return 2\n"}],
    }
    resp = await post(api, f"Bot/{bot['id']}/$deploy", params)
    assert resp.status == 200, await resp.text()
    deployed = await resp.json()
    assert deployed["meta"]["versionId"] == "2" and "return 2" in deployed["code"]
    assert resp.headers["ETag"] == 'W/"2"'
    text = "def handler(fhir, event):\n    return 3\n"
    resp = await post(api, f"Bot/{bot['id']}/$deploy", text, "text/x-python")
    assert (await resp.json())["meta"]["versionId"] == "3"
    run = await post(api, f"Bot/{bot['id']}/$execute", {}, "application/json")
    assert await run.json() == 3
    refused = await post(api, f"Bot/{bot['id']}/$deploy", "import socket\n", "text/x-python")
    assert refused.status == 422
    diagnostics = [i["diagnostics"] for i in (await refused.json())["issue"]]
    assert any("line 1, column 1" in d and "socket" in d for d in diagnostics)
    current = await (await api.client.get(f"{BASE}/Bot/{bot['id']}", headers=api.headers())).json()
    assert current["meta"]["versionId"] == "3"
    assert (
        await post(api, "Bot/missing/$deploy", {"code": text}, "application/json")
    ).status == 404
    empty = await post(api, f"Bot/{bot['id']}/$deploy", {"resourceType": "Parameters"})
    assert empty.status == 400


async def test_deploying_the_same_source_again_is_unchanged(api: Api) -> None:
    bot = await create_bot(api)
    text = "def handler(fhir, event):\n    return 2\n"
    first = await post(api, f"Bot/{bot['id']}/$deploy", text, "text/x-python")
    assert first.headers[DEPLOY_HEADER] == "deployed"
    again = await post(api, f"Bot/{bot['id']}/$deploy", text, "text/x-python")
    assert again.status == 200 and again.headers[DEPLOY_HEADER] == "unchanged"
    assert (await again.json())["meta"]["versionId"] == "2" and again.headers["ETag"] == 'W/"2"'
    history = await api.client.get(f"{BASE}/Bot/{bot['id']}/_history", headers=api.headers())
    assert (await history.json())["total"] == 2


async def test_execute_takes_json_fhir_text_hl7_form_and_query(api: Api) -> None:
    bot = await create_bot(api)
    path = f"Bot/{bot['id']}/$execute"
    resp = await post(api, path, {"a": [1, 2]}, "application/json")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert resp.headers[EXECUTION_HEADER]
    body = await resp.json()
    assert body["input"] == {"a": [1, 2]} and body["type"] == "application/json"
    assert body["requester"].startswith("ApiKey/")
    patient = {"resourceType": "Patient", "id": "p"}
    assert (await (await post(api, path, patient)).json())["input"] == patient
    text = await (await post(api, path, "hello", "text/plain")).json()
    assert text["input"] == "hello" and text["type"] == "text/plain"
    message = "MSH|^~\\&|LAB|H|||202401011200||ADT^A01|1|P|2.5\rPID|1||42"
    hl7 = await (await post(api, path, message, "x-application/hl7-v2+er7")).json()
    assert hl7["input"] == message
    form = FormData({"name": "x", "n": "1"})
    resp = await api.client.post(
        f"{BASE}/{path}", data=form, headers={"Authorization": f"Bearer {api.token}"}
    )
    assert (await resp.json())["input"] == {"name": "x", "n": "1"}
    resp = await api.client.get(f"{BASE}/{path}?x=1&x=2&y=z", headers=api.headers())
    assert (await resp.json())["input"] == {"x": ["1", "2"], "y": "z"}
    bad = await post(api, path, b"\x00\x01", "application/octet-stream")
    assert bad.status == 415


async def test_outputs_keep_their_kind(api: Api) -> None:
    code = """
def handler(fhir, event):
    if event.input == "text":
        return "plain words"
    return {"resourceType": "Parameters", "parameter": [{"name": "n", "valueInteger": 1}]}
"""
    bot = await create_bot(api, code)
    resp = await post(api, f"Bot/{bot['id']}/$execute", "text", "text/plain")
    assert resp.content_type == "text/plain" and await resp.text() == "plain words"
    resp = await post(api, f"Bot/{bot['id']}/$execute", "fhir", "text/plain")
    assert resp.content_type == "application/fhir+json"
    assert (await resp.json())["resourceType"] == "Parameters"


async def test_failure_is_an_operation_outcome_with_the_logs(api: Api) -> None:
    code = """
def handler(fhir, event):
    print("about to fail")
    raise ValueError("no good")
"""
    bot = await create_bot(api, code)
    resp = await post(api, f"Bot/{bot['id']}/$execute", {}, "application/json")
    assert resp.status == 400
    outcome = await resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "ValueError: no good" in outcome["issue"][0]["diagnostics"]
    assert "about to fail" in outcome["issue"][1]["diagnostics"]
    slow = await create_bot(
        api, "def handler(fhir, event):\n    while True:\n        pass\n", timeout=0.5
    )
    resp = await post(api, f"Bot/{slow['id']}/$execute", {}, "application/json")
    assert resp.status == 500
    assert "timeout" in (await resp.json())["issue"][0]["diagnostics"]


async def test_execute_unknown_or_retired_bot(api: Api) -> None:
    assert (await post(api, "Bot/nope/$execute", {}, "application/json")).status == 404
    retired = await create_bot(api, status="retired")
    assert (await post(api, f"Bot/{retired['id']}/$execute", {}, "application/json")).status == 409


async def test_respond_async_answers_202_then_the_result(api: Api) -> None:
    code = "def handler(fhir, event):\n    sum(range(3000000))\n    return {'done': event.input}\n"
    bot = await create_bot(api, code)
    resp = await api.client.post(
        f"{BASE}/Bot/{bot['id']}/$execute",
        data=orjson.dumps({"n": 1}),
        headers=api.headers(**{"Content-Type": "application/json", "Prefer": "respond-async"}),
    )
    assert resp.status == 202
    status_url = resp.headers["Content-Location"]
    assert "/Bot/$job/" in status_url
    path = status_url[status_url.index("/fhir/R4") :]

    async def finished() -> ClientResponse | None:
        poll = await api.client.get(path, headers=api.headers())
        if poll.status != 202:
            return poll
        assert poll.headers["Retry-After"]
        return None

    poll = await eventually(finished, "the job's result")
    assert poll.status == 200
    assert await poll.json() == {"done": {"n": 1}}
    other = await api.engine.create_project("p2", "Other")
    assert (await api.client.get(path, headers=api.headers(other))).status == 404


async def test_executions_are_audited_per_the_trigger(api: Api) -> None:
    always = await create_bot(api, name="always")
    never = await create_bot(api, name="never", auditEventTrigger="never")
    for bot in (always, never):
        resp = await post(api, f"Bot/{bot['id']}/$execute", {}, "application/json")
        assert resp.status == 200
    events = await (await api.client.get(f"{BASE}/AuditEvent", headers=api.headers())).json()
    audited = [e["resource"] for e in events["entry"]]
    assert len(audited) == 1
    assert audited[0]["agent"][0]["who"]["reference"] == f"Bot/{always['id']}"
    assert audited[0]["outcome"] == "0"


async def test_bots_see_only_the_secrets_they_name(api: Api) -> None:
    folder = api.engine.settings.data_dir / "secrets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "p1.json").write_text('{"LAB_KEY": "k1", "OTHER": "hidden"}')
    code = "def handler(fhir, event):\n    return dict(event.secrets)\n"
    bot = await create_bot(api, code, secret=["LAB_KEY", "MISSING"])
    resp = await post(api, f"Bot/{bot['id']}/$execute", {}, "application/json")
    assert await resp.json() == {"LAB_KEY": "k1"}


async def test_execute_over_the_project_queue_is_429_with_retry_after(api: Api) -> None:
    bot = await create_bot(api)
    slots = api.engine.bots.executor.slots
    # Project p1 holds its whole share and a full queue (taken directly, no bots needed).
    for _ in range(slots.limit):
        await slots.acquire("p1", bounded=False)
    queued = [
        asyncio.ensure_future(slots.acquire("p1", bounded=False)) for _ in range(slots.queue_limit)
    ]
    await eventually(lambda: slots.waiting("p1") == slots.queue_limit, "p1's queue is full")
    try:
        for prefer in ({}, {"Prefer": "respond-async"}):
            resp = await api.client.post(
                f"{BASE}/Bot/{bot['id']}/$execute",
                data=b"{}",
                headers=api.headers(**{"Content-Type": "application/json", **prefer}),
            )
            assert resp.status == 429, await resp.text()
            assert int(resp.headers["Retry-After"]) >= 1
            outcome = await resp.json()
            assert outcome["issue"][0]["code"] == "throttled"
            assert "p1" in outcome["issue"][0]["diagnostics"]
    finally:
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        for _ in range(slots.limit):
            slots.release("p1")
    resp = await post(api, f"Bot/{bot['id']}/$execute", {"a": 1}, "application/json")
    assert resp.status == 200, await resp.text()
