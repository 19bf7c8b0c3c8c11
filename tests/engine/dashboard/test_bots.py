"""The Bots view: the list and its figures, compile checks, saving, sample inputs and runs,
rollback, the recording setting, and project scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fhirbots.engine.dashboard.bots import SAMPLE_INPUT_URL
from fhirbots.engine.storage.model import WriteContext
from tests.engine.scenarios.bots import store_bot
from tests.engine.scenarios.dashboard import Browser, new_client, sign_in
from tests.waiting import eventually

ECHO = """\
from fhirbots import logger

def handler(fhir, event):
    logger.info("got %s", event.content_type)
    return {"echo": event.input}
"""

FLAGGER = """\
from fhirbots import logger

def handler(fhir, event):
    patient = event.input
    logger.info("flagging %s", patient["id"])
    flag = fhir.create({"resourceType": "Flag", "status": "active",
                        "subject": {"reference": "Patient/" + patient["id"]},
                        "code": {"text": "seen"}})
    return {"flag": flag["id"]}
"""

PATIENT = {"resourceType": "Patient", "id": "pat-1", "gender": "female"}


async def _run(browser: Browser, bot_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await browser.client.post(
        f"/dashboard/api/bots/{bot_id}/run", json=body, headers={"X-CSRF-Token": browser.csrf}
    )
    ran: dict[str, Any] = await response.json()
    assert response.status == 200, ran
    return ran


async def _send(browser: Browser, method: str, path: str, body: Any) -> Any:
    response = await browser.client.request(
        method, path, json=body, headers={"X-CSRF-Token": browser.csrf}
    )
    answer = await response.json()
    assert response.status == 200, answer
    return answer


async def _record(browser: Browser, execution_id: str) -> dict[str, Any]:
    async def kept() -> dict[str, Any] | None:
        response = await browser.client.get(f"/dashboard/api/executions/{execution_id}")
        return await response.json() if response.status == 200 else None

    return await eventually(kept, f"the record of execution {execution_id}")


async def _audited(browser: Browser, subtype: str) -> list[dict[str, Any]]:
    response = await browser.fhir("GET", "/fhir/R4/AuditEvent?_count=200")
    bundle = await response.json()
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if any(s.get("code") == subtype for s in e["resource"].get("subtype", []))
    ]


async def test_the_list_shows_a_bot_with_its_version_triggers_and_last_run(
    browser: Browser,
) -> None:
    bot_id = await store_bot(browser.engine, ECHO, name="echo", cronString="0 3 * * *")
    subscription = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "echo patients",
        "criteria": "Patient?gender=female",
        "channel": {"type": "rest-hook", "endpoint": f"Bot/{bot_id}"},
    }
    await browser.engine.fhir.update(
        "p1", "Subscription", "to-echo", subscription, WriteContext(author="test")
    )
    ran = await _run(browser, bot_id, {"content_type": "application/json", "input": "[1, 2]"})
    assert ran["execution"]["status"] == "success"

    async def listed() -> dict[str, Any] | None:
        bots = (await browser.api("/dashboard/api/bots"))["bots"]
        return bots[0] if bots and bots[0]["last_run"] else None

    bot = await eventually(listed, "the bot listed with its last run")
    assert bot["id"] == bot_id and bot["name"] == "echo" and bot["version"] == "1"
    assert bot["last_run"]["id"] == ran["execution"]["id"]
    assert bot["last_run"]["status"] == "success"
    kinds = {t["kind"]: t for t in bot["triggers"]}
    assert kinds["subscription"]["subscription"] == "Subscription/to-echo"
    assert kinds["cron"]["cron"] == "0 3 * * *"

    assert browser.engine.stats is not None
    await browser.engine.stats.tick(None, now=datetime.now(UTC) + timedelta(minutes=1))
    bot = (await browser.api("/dashboard/api/bots"))["bots"][0]
    for span in ("1h", "24h"):
        figures = bot["stats"][span]
        assert figures["runs"] == 1 and figures["failed"] == 0 and figures["error_rate"] == 0
        assert figures["p50_ms"] is not None and figures["p99_ms"] >= figures["p50_ms"]

    page = await browser.page("/dashboard/bots")
    assert f'href="/dashboard/bots/{bot_id}"' in page and "echo" in page and "v1" in page
    assert f"/dashboard/executions/{ran['execution']['id']}" in page
    rows = await browser.page("/dashboard/bots?partial=rows")
    assert "<html" not in rows and f'data-bot="{bot_id}"' in rows


async def test_a_compile_error_comes_back_on_its_line(browser: Browser) -> None:
    bot_id = await store_bot(browser.engine, ECHO)
    broken = "def handler(fhir, event):\n    x = 1\n    return x.__class__\n"
    checked = await _send(browser, "POST", f"/dashboard/api/bots/{bot_id}/check", {"code": broken})
    assert checked["ok"] is False
    [problem] = checked["problems"]
    assert problem["line"] == 3 and problem["column"] >= 1 and "__class__" in problem["message"]
    refused = await _send(
        browser, "POST", f"/dashboard/api/bots/{bot_id}/check", {"code": "import os\n"}
    )
    lines = {p["line"] for p in refused["problems"]}
    assert lines == {1} and any("'os'" in p["message"] for p in refused["problems"])
    assert (await browser.api(f"/dashboard/api/bots/{bot_id}"))["version"] == "1"


async def test_save_deploys_a_new_version_and_the_same_code_again_does_not(
    browser: Browser,
) -> None:
    """The page's save: check, then deploy through the FHIR API only when clean and changed."""
    bot_id = await store_bot(browser.engine, ECHO)
    changed = ECHO.replace('"echo"', '"said"')

    async def save(code: str) -> str:
        checked = await _send(
            browser, "POST", f"/dashboard/api/bots/{bot_id}/check", {"code": code}
        )
        assert checked["ok"], checked
        if checked["unchanged"]:
            return "unchanged"
        response = await browser.fhir("POST", f"/fhir/R4/Bot/{bot_id}/$deploy", json={"code": code})
        assert response.status == 200, await response.text()
        return str((await response.json())["meta"]["versionId"])

    assert await save(changed) == "2"
    assert await save(changed) == "unchanged"
    detail = await browser.api(f"/dashboard/api/bots/{bot_id}")
    assert detail["version"] == "2" and detail["code"] == changed
    page = await browser.page(f"/dashboard/bots/{bot_id}")
    assert 'id="bot-version">2<' in page and "&#34;said&#34;" in page
    assert f'data-deploy="/fhir/R4/Bot/{bot_id}/$deploy"' in page


async def test_run_with_a_saved_sample_input_shows_output_and_logs_and_is_recorded(
    browser: Browser,
) -> None:
    bot_id = await store_bot(browser.engine, FLAGGER, name="flagger")
    await browser.engine.fhir.update("p1", "Patient", "pat-1", PATIENT, WriteContext(author="t"))
    sample = {
        "content_type": "application/fhir+json",
        "text": '{"resourceType": "Patient", "id": "pat-1", "gender": "female"}',
    }
    saved = await _send(browser, "PUT", f"/dashboard/api/bots/{bot_id}/sample", sample)
    assert saved == {"unchanged": False, "version": "2"}
    again = await _send(browser, "PUT", f"/dashboard/api/bots/{bot_id}/sample", sample)
    assert again["unchanged"] is True
    stored = (await browser.engine.fhir.read("p1", "Bot", bot_id)).content
    assert stored is not None
    [extension] = [e for e in stored["extension"] if e["url"] == SAMPLE_INPUT_URL]
    parts = {p["url"]: p for p in extension["extension"]}
    assert parts["contentType"]["valueCode"] == "application/fhir+json"
    assert '"pat-1"' in parts["value"]["valueString"]

    ran = await _run(browser, bot_id, {})  # no input given: the saved sample
    run = ran["execution"]
    assert run["status"] == "success" and ran["bot_version"] == "2"
    assert "flagging pat-1" in run["logs"]
    assert run["output"]["flag"] and run["duration_ms"] > 0 and run["fhir_calls"] == 1

    record = await _record(browser, run["id"])
    assert record["input"] == PATIENT and record["output"] == run["output"]
    assert record["trigger"] == "execute" and record["requester"].startswith("ApiKey/")
    listed = await browser.api("/dashboard/api/executions", bot=bot_id)
    assert [x["id"] for x in listed["executions"]] == [run["id"]]

    async def wrote() -> list[dict[str, Any]] | None:
        found: list[dict[str, Any]] = (await _record(browser, run["id"]))["writes"]
        # The execution's AuditEvent is a write of the run too (its causation names it).
        flags = [w for w in found if w["resource"].startswith("Flag/")]
        return flags or None

    [write] = await eventually(wrote, "the Flag the bot wrote, in its trace")
    assert write["resource"] == f"Flag/{run['output']['flag']}"
    assert write["interaction"] == "create" and write["trace"] == f"/dashboard/trace/{write['ref']}"
    page = await browser.page(f"/dashboard/executions/{run['id']}")
    assert write["trace"] in page and "flagging pat-1" in page

    bot_page = await browser.page(f"/dashboard/bots/{bot_id}")
    assert "&#34;pat-1&#34;" in bot_page and f"/dashboard/executions/{run['id']}" in bot_page
    assert len(await _audited(browser, "bot-run")) == 1
    assert len(await _audited(browser, "bot-sample-input")) == 1


async def test_hl7v2_and_text_samples_reach_the_bot_as_text(browser: Browser) -> None:
    bot_id = await store_bot(browser.engine, ECHO)
    message = "MSH|^~\\&|LAB|X|||202401010000||ADT^A01|1|P|2.5\nPID|1||42\n"
    ran = await _run(
        browser, bot_id, {"content_type": "x-application/hl7-v2+er7", "input": message}
    )
    run = ran["execution"]
    assert run["output"] == {"echo": message.rstrip("\n").replace("\n", "\r")}
    assert "got x-application/hl7-v2+er7" in run["logs"]
    bad = await browser.client.post(
        f"/dashboard/api/bots/{bot_id}/run",
        json={"content_type": "application/json", "input": "{nope"},
        headers={"X-CSRF-Token": browser.csrf},
    )
    assert bad.status == 400 and "not JSON" in (await bad.json())["error"]
    refused = await browser.client.put(
        f"/dashboard/api/bots/{bot_id}/sample",
        json={"content_type": "image/png", "text": "x"},
        headers={"X-CSRF-Token": browser.csrf},
    )
    assert refused.status == 400


async def test_rollback_restores_old_code_as_a_new_version(browser: Browser) -> None:
    bot_id = await store_bot(browser.engine, ECHO)
    newer = ECHO.replace('"echo"', '"v2"')
    deployed = await browser.fhir("POST", f"/fhir/R4/Bot/{bot_id}/$deploy", json={"code": newer})
    assert deployed.status == 200
    history = await browser.api(f"/dashboard/api/bots/{bot_id}/history")
    assert [v["version"] for v in history["versions"]] == ["2", "1"]
    assert all(v["code_changed"] for v in history["versions"])
    assert [v["code_is_current"] for v in history["versions"]] == [True, False]
    old = await browser.api(f"/dashboard/api/bots/{bot_id}/history/1")
    assert old["code"] == ECHO

    rolled = await _send(
        browser, "POST", f"/dashboard/api/bots/{bot_id}/rollback", {"version": "1"}
    )
    assert rolled == {"unchanged": False, "version": "3"}
    current = await browser.engine.fhir.read("p1", "Bot", bot_id)
    assert current.content is not None and current.content["code"] == ECHO
    again = await _send(browser, "POST", f"/dashboard/api/bots/{bot_id}/rollback", {"version": "1"})
    assert again == {"unchanged": True, "version": "3"}
    [audit] = await _audited(browser, "bot-rollback")
    assert audit["entity"][0]["what"]["reference"] == f"Bot/{bot_id}"
    assert "version 1" in audit["outcomeDesc"] and audit["agent"][0]["who"]["reference"].startswith(
        "ApiKey/"
    )
    missing = await browser.client.get(f"/dashboard/api/bots/{bot_id}/history/9")
    assert missing.status == 404


async def test_recording_none_keeps_no_record_but_still_counts(browser: Browser) -> None:
    bot_id = await store_bot(browser.engine, ECHO)
    saved = await _send(
        browser, "PUT", f"/dashboard/api/bots/{bot_id}/recording", {"execution_recording": "none"}
    )
    assert saved == {"unchanged": False, "version": "2"}
    stored = (await browser.engine.fhir.read("p1", "Bot", bot_id)).content
    assert stored is not None and stored["executionRecording"] == "none"
    assert len(await _audited(browser, "bot-recording")) == 1
    ran = await _run(browser, bot_id, {"content_type": "application/json", "input": "1"})
    execution_id = ran["execution"]["id"]
    assert ran["execution"]["output"] == {"echo": 1}  # the caller still sees the result

    async def consumed() -> str | None:
        return await browser.engine.observatory.trace_of("p1", execution_id)

    await eventually(consumed, "the statistics stage to consume the execution")
    assert browser.engine.stats is not None
    await browser.engine.stats.tick(None, now=datetime.now(UTC) + timedelta(minutes=1))
    [bot] = (await browser.api("/dashboard/api/bots"))["bots"]
    assert bot["stats"]["1h"]["runs"] == 1 and bot["last_run"] is None
    assert bot["execution_recording"] == "none"
    missing = await browser.client.get(f"/dashboard/api/executions/{execution_id}")
    assert missing.status == 404
    assert (await browser.api("/dashboard/api/executions"))["executions"] == []
    bad = await browser.client.put(
        f"/dashboard/api/bots/{bot_id}/recording",
        json={"execution_recording": "sometimes"},
        headers={"X-CSRF-Token": browser.csrf},
    )
    assert bad.status == 400


async def test_another_project_sees_nothing_of_these_bots(browser: Browser) -> None:
    bot_id = await store_bot(browser.engine, ECHO, name="secret-bot")
    ran = await _run(browser, bot_id, {"content_type": "application/json", "input": "1"})
    await _record(browser, ran["execution"]["id"])

    other = await new_client(browser.client.server)
    try:
        csrf = await sign_in(other, browser.other_key)
        headers = {"X-CSRF-Token": csrf}
        assert (await (await other.get("/dashboard/api/bots")).json())["bots"] == []
        assert "secret-bot" not in await (await other.get("/dashboard/bots")).text()
        for path in (
            f"/dashboard/api/bots/{bot_id}",
            f"/dashboard/bots/{bot_id}",
            f"/dashboard/api/bots/{bot_id}/history",
        ):
            assert (await other.get(path)).status == 404, path
        for method, path, body in (
            ("POST", f"/dashboard/api/bots/{bot_id}/check", {"code": ECHO}),
            ("POST", f"/dashboard/api/bots/{bot_id}/run", {}),
            ("POST", f"/dashboard/api/bots/{bot_id}/rollback", {"version": "1"}),
            (
                "PUT",
                f"/dashboard/api/bots/{bot_id}/sample",
                {"content_type": "text/plain", "text": "x"},
            ),
            ("PUT", f"/dashboard/api/bots/{bot_id}/recording", {"execution_recording": "all"}),
        ):
            response = await other.request(method, path, json=body, headers=headers)
            assert response.status == 404, path
        scripted = await other.get(
            "/dashboard/api/bots", headers={"Authorization": f"Bearer {browser.other_key}"}
        )
        assert (await scripted.json())["bots"] == []
    finally:
        await other.close()
    current = await browser.engine.fhir.read("p1", "Bot", bot_id)
    assert current.version_id == 1


async def test_scripts_read_the_bots_with_a_key(browser: Browser) -> None:
    await store_bot(browser.engine, ECHO, name="scripted")
    stranger = await new_client(browser.client.server)
    try:
        response = await stranger.get(
            "/dashboard/api/bots", headers={"Authorization": f"Bearer {browser.key}"}
        )
        body = await response.json()
        assert response.status == 200 and [b["name"] for b in body["bots"]] == ["scripted"]
        refused = await stranger.get("/dashboard/api/bots")
        assert refused.status == 401
    finally:
        await stranger.close()
