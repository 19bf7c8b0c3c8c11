"""The trace view: a write, the notifications it produced, their delivery attempts, the bot
executions they triggered and the writes those made, as one tree with timings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import POSTGRES
from tests.engine.scenarios.dashboard import Browser, served_engine, sign_in
from tests.engine.scenarios.delivery import Receiver
from tests.waiting import eventually

JSON = {"Content-Type": "application/fhir+json"}
Node = dict[str, Any]

FLAGGER = """
def handler(fhir, event):
    observation = event.input
    logger.info("flagging %s", observation["id"])
    flag = fhir.create({
        "resourceType": "Flag",
        "status": "active",
        "code": {"text": "seen " + observation["id"]},
        "subject": observation["subject"],
    })
    return {"flag": flag["id"]}
"""
"""A bot that answers an Observation with a Flag (a write of its own)."""


@contextlib.asynccontextmanager
async def browsing(storage: str, data_dir: Path, *, bots: bool = False) -> AsyncIterator[Browser]:
    """A served engine that may deliver to loopback (and run bots), and a signed-in client."""
    async with served_engine(
        storage, data_dir, allowed_endpoint_networks=("127.0.0.0/8",)
    ) as served:
        if bots:
            await served.engine.start_bots(cron=False)
        client = TestClient(served.server)
        await client.start_server()
        opened = Browser(client, served.engine, served.key, served.other_key)
        try:
            opened.csrf = await sign_in(client, served.key)
            yield opened
        finally:
            await client.close()


@pytest.fixture(params=["sqlite", POSTGRES])
def storage(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


async def post(browser: Browser, resource: dict[str, Any]) -> dict[str, Any]:
    response = await browser.fhir(
        "POST", f"/fhir/R4/{resource['resourceType']}", json=resource, headers=JSON
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def subscribe(browser: Browser, criteria: str, endpoint: str) -> None:
    subscription = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "trace test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"},
    }
    await post(browser, subscription)


async def change_ref(browser: Browser, resource: dict[str, Any]) -> str:
    """The change event id of ``resource``'s write (found in the event browser)."""
    key = f"/{resource['resourceType']}/{resource['id']}"

    async def find() -> str | None:
        page = await browser.api("/dashboard/api/events", key=key)
        return str(page["items"][0]["ref"]) if page["items"] else None

    return await eventually(find, f"the change of {key}")


def path_of(roots: list[Node], kinds: list[str]) -> list[Node] | None:
    """A chain of nodes whose kinds are ``kinds``, each a child of the one before."""

    def walk(nodes: list[Node], rest: list[str]) -> list[Node] | None:
        for node in nodes:
            if node["kind"] != rest[0]:
                continue
            if len(rest) == 1:
                return [node]
            below = walk(node["children"], rest[1:])
            if below is not None:
                return [node, *below]
        return None

    return walk(roots, kinds)


async def wait_for_chain(browser: Browser, ref: str, kinds: list[str]) -> tuple[Node, list[Node]]:
    async def chain() -> tuple[Node, list[Node]] | None:
        response = await browser.client.get(f"/dashboard/api/trace/{ref}")
        if response.status == 404:
            return None  # not indexed yet
        trace: Node = await response.json()
        assert response.status == 200, trace
        found = path_of(trace["roots"], kinds)
        return (trace, found) if found is not None else None

    return await eventually(chain, " -> ".join(kinds))


async def test_a_delivered_write_is_change_notification_delivery(
    storage: str, tmp_path: Path, receiver: Receiver
) -> None:
    async with browsing(storage, tmp_path) as browser:
        await subscribe(browser, "Patient?gender=male", receiver.url + "/hook")
        patient = await post(browser, {"resourceType": "Patient", "gender": "male"})
        await receiver.wait_for("/hook", 1)
        ref = await change_ref(browser, patient)
        trace, chain = await wait_for_chain(browser, ref, ["change", "notification", "delivery"])
        change, notification, delivery = chain
        assert change["focus"] and change["parent"] is None and change["offset_ms"] == 0
        assert change["summary"]["resource"] == f"Patient/{patient['id']}"
        assert notification["parent"] == change["ref"]
        assert notification["summary"]["endpoint"] == receiver.url + "/hook"
        summary = delivery["summary"]
        assert summary["outcome"] == "success" and summary["status"] == 200
        assert summary["endpoint"] == receiver.url + "/hook"
        assert delivery["duration_ms"] is not None and delivery["offset_ms"] >= 0
        record = delivery["record"]
        assert delivery["links"]["record"] == (
            f"/dashboard/events/{record['topic']}/{record['partition']}/{record['offset']}"
        )
        assert trace["steps"] >= 3 and trace["span_ms"] >= 0
        # Any step leads to the same trace.
        again = await browser.api(f"/dashboard/api/trace/{delivery['ref']}")
        assert again["trace_id"] == trace["trace_id"]
        page = await browser.page(f"/dashboard/trace/{ref}")
        assert 'id="trace"' in page and f"Patient/{patient['id']}" in page
        assert receiver.url + "/hook" in page
        # Another project's key finds nothing of it.
        theirs = await browser.client.get(
            f"/dashboard/api/trace/{ref}",
            headers={"Authorization": f"Bearer {browser.other_key}"},
        )
        assert theirs.status == 404


async def test_a_bot_write_is_change_notification_execution_change(
    storage: str, tmp_path: Path
) -> None:
    async with browsing(storage, tmp_path, bots=True) as browser:
        bot = await post(browser, {"resourceType": "Bot", "name": "flagger", "code": FLAGGER})
        await subscribe(browser, "Observation?status=final", f"Bot/{bot['id']}")
        patient = await post(browser, {"resourceType": "Patient"})
        observation = await post(
            browser,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "potassium"},
                "subject": {"reference": f"Patient/{patient['id']}"},
            },
        )
        ref = await change_ref(browser, observation)
        kinds = ["change", "notification", "execution", "change"]
        _, chain = await wait_for_chain(browser, ref, kinds)
        write, notification, execution, flag = chain
        assert write["summary"]["resource"] == f"Observation/{observation['id']}"
        assert notification["summary"]["endpoint"] == f"Bot/{bot['id']}"
        assert execution["summary"]["bot"] == f"Bot/{bot['id']}"
        assert execution["summary"]["status"] == "success"
        kept = execution["execution"]
        assert kept["input"]["id"] == observation["id"]
        assert "flagging" in kept["logs"] and set(kept["output"]) == {"flag"}
        assert execution["links"]["execution"] == f"/dashboard/executions/{execution['ref']}"
        assert flag["summary"]["resource"] == f"Flag/{kept['output']['flag']}"
        assert flag["summary"]["author"] == f"Bot/{bot['id']}"
        assert flag["parent"] == execution["ref"]
        page = await browser.page(f"/dashboard/trace/{flag['ref']}")
        assert "flagging" in page and "Flag/" in page


async def test_an_unknown_step_is_not_found(browser: Browser) -> None:
    response = await browser.client.get("/dashboard/api/trace/nothing-like-it")
    assert response.status == 404 and "nothing-like-it" in (await response.json())["error"]
    page = await browser.client.get("/dashboard/trace/nothing-like-it")
    assert page.status == 404 and "nothing-like-it" in await page.text()
