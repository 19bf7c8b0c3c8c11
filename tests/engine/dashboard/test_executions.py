"""The executions view: outcome filters (a timeout told apart from an error), paging, one
execution, running it again, and project scope."""

from __future__ import annotations

from typing import Any

from tests.engine.scenarios.bots import store_bot
from tests.engine.scenarios.dashboard import Browser, new_client, sign_in
from tests.waiting import eventually

RAISES = """\
def handler(fhir, event):
    return 1 / 0
"""

LOOPS = """\
def handler(fhir, event):
    n = 0
    while True:
        n = n + 1
"""

ECHO = """\
from fhirbots import logger

def handler(fhir, event):
    logger.info("echo")
    return {"echo": event.input}
"""


async def _run(browser: Browser, bot_id: str, value: str, media: str) -> dict[str, Any]:
    response = await browser.client.post(
        f"/dashboard/api/bots/{bot_id}/run",
        json={"content_type": media, "input": value},
        headers={"X-CSRF-Token": browser.csrf},
    )
    ran: dict[str, Any] = await response.json()
    assert response.status == 200, ran
    execution: dict[str, Any] = ran["execution"]
    return execution


async def _listed(browser: Browser, count: int, **query: str) -> list[dict[str, Any]]:
    async def enough() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = (await browser.api("/dashboard/api/executions", **query))[
            "executions"
        ]
        return rows if len(rows) >= count else None

    return await eventually(enough, f"{count} executions listed for {query}")


async def test_the_outcome_filter_tells_a_timeout_from_an_error(browser: Browser) -> None:
    raising = await store_bot(browser.engine, RAISES, name="raises")
    looping = await store_bot(browser.engine, LOOPS, name="loops", timeout=0.5)
    echo = await store_bot(browser.engine, ECHO, name="echo")
    error = await _run(browser, raising, "{}", "application/json")
    timeout = await _run(browser, looping, "{}", "application/json")
    ok = await _run(browser, echo, "{}", "application/json")
    assert (error["status"], timeout["status"], ok["status"]) == ("error", "timeout", "success")
    assert "ZeroDivisionError" in error["error"]

    every = await _listed(browser, 3)
    outcomes = {x["id"]: x["outcome"] for x in every}
    assert outcomes == {error["id"]: "error", timeout["id"]: "timeout", ok["id"]: "ok"}
    for outcome, expected in (("error", error), ("timeout", timeout), ("ok", ok)):
        rows = (await browser.api("/dashboard/api/executions", outcome=outcome))["executions"]
        assert [x["id"] for x in rows] == [expected["id"]], outcome
    assert (await browser.api("/dashboard/api/executions", outcome="killed"))["executions"] == []
    by_bot = await browser.api("/dashboard/api/executions", bot=f"Bot/{looping}")
    assert [x["id"] for x in by_bot["executions"]] == [timeout["id"]]

    page = await browser.page("/dashboard/executions?outcome=timeout")
    assert f'data-execution="{timeout["id"]}"' in page
    assert f'data-execution="{error["id"]}"' not in page
    listing = await browser.page("/dashboard/executions")
    assert f'data-execution="{timeout["id"]}" data-outcome="timeout"' in listing
    assert f'data-execution="{error["id"]}" data-outcome="error"' in listing
    assert "ZeroDivisionError" in listing

    bad = await browser.client.get("/dashboard/api/executions?outcome=maybe")
    assert bad.status == 400 and "outcome" in (await bad.json())["error"]


async def test_pages_of_executions_follow_each_other(browser: Browser) -> None:
    echo = await store_bot(browser.engine, ECHO)
    ran = [await _run(browser, echo, str(i), "application/json") for i in range(3)]
    await _listed(browser, 3)
    first = await browser.api("/dashboard/api/executions", limit="2")
    assert [x["id"] for x in first["executions"]] == [ran[2]["id"], ran[1]["id"]]
    assert first["next_before"]
    second = await browser.api("/dashboard/api/executions", limit="2", before=first["next_before"])
    assert [x["id"] for x in second["executions"]] == [ran[0]["id"]]
    assert second["next_before"] is None
    page = await browser.page("/dashboard/executions?limit=2")
    assert 'id="older"' in page
    for bad in ("0", "x", "100000"):
        assert (await browser.client.get(f"/dashboard/api/executions?limit={bad}")).status == 400
    assert (await browser.client.get("/dashboard/api/executions?before=yesterday")).status == 400


async def test_run_again_makes_a_new_execution_with_the_same_input(browser: Browser) -> None:
    echo = await store_bot(browser.engine, ECHO)
    message = "MSH|^~\\&|A|B\rPID|1||7"
    first = await _run(browser, echo, message, "x-application/hl7-v2+er7")
    await _listed(browser, 1)
    response = await browser.client.post(
        f"/dashboard/api/executions/{first['id']}/$rerun", headers={"X-CSRF-Token": browser.csrf}
    )
    again = await response.json()
    assert response.status == 200, again
    assert again["rerun_of"] == first["id"] and again["execution"]["id"] != first["id"]
    assert again["execution"]["output"] == {"echo": message}
    rows = await _listed(browser, 2)
    assert [x["id"] for x in rows] == [again["execution"]["id"], first["id"]]
    record = await browser.api(f"/dashboard/api/executions/{again['execution']['id']}")
    assert record["input"] == message and record["logs"].strip().endswith("echo")

    audits = await browser.fhir("GET", "/fhir/R4/AuditEvent?_count=200")
    descriptions = [
        e["resource"]["outcomeDesc"]
        for e in (await audits.json())["entry"]
        if e["resource"]["subtype"][0].get("code") == "bot-rerun"
    ]
    assert len(descriptions) == 1 and first["id"] in descriptions[0]

    page = await browser.page(f"/dashboard/executions/{first['id']}")
    assert f'data-rerun="/dashboard/api/executions/{first["id"]}/$rerun"' in page
    assert "MSH|^~\\&amp;|A|B" in page  # the input, escaped


async def test_an_unknown_execution_is_a_404(browser: Browser) -> None:
    missing = await browser.client.get("/dashboard/api/executions/nope")
    assert missing.status == 404 and "executionRecording" in (await missing.json())["error"]
    page = await browser.client.get("/dashboard/executions/nope")
    assert page.status == 404
    rerun = await browser.client.post(
        "/dashboard/api/executions/nope/$rerun", headers={"X-CSRF-Token": browser.csrf}
    )
    assert rerun.status == 404
    forged = await browser.client.post("/dashboard/api/executions/nope/$rerun")
    assert forged.status == 403  # no CSRF token


async def test_another_project_sees_nothing_of_these_executions(browser: Browser) -> None:
    echo = await store_bot(browser.engine, ECHO)
    ran = await _run(browser, echo, "{}", "application/json")
    await _listed(browser, 1)
    other = await new_client(browser.client.server)
    try:
        csrf = await sign_in(other, browser.other_key)
        listed = await (await other.get("/dashboard/api/executions")).json()
        assert listed["executions"] == []
        by_bot = await (await other.get(f"/dashboard/api/executions?bot={echo}")).json()
        assert by_bot["executions"] == []
        assert ran["id"] not in await (await other.get("/dashboard/executions")).text()
        for path in (
            f"/dashboard/api/executions/{ran['id']}",
            f"/dashboard/executions/{ran['id']}",
        ):
            assert (await other.get(path)).status == 404, path
        rerun = await other.post(
            f"/dashboard/api/executions/{ran['id']}/$rerun", headers={"X-CSRF-Token": csrf}
        )
        assert rerun.status == 404
        assert len(await _listed(browser, 1)) == 1  # no second run was made
    finally:
        await other.close()  # closes the shared test server too: the last request
