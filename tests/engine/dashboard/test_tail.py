"""The live tail: Server-Sent Events of changes, notifications, deliveries and executions,
filtered per client, scoped to the caller's project, sampled when they come too fast."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from playwright.async_api import expect

from fhirbots.engine.dashboard.tail import TAILER, TailClient, Tailer, TailFilter
from fhirbots.engine.errors import BadRequest
from fhirbots.engine.eventlog.port import OutgoingMessage
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.topics import CHANGES
from tests.engine.scenarios.browser import WAIT_MS, Dashboard
from tests.engine.scenarios.dashboard import Browser, Client, new_client, sign_in
from tests.waiting import eventually

Event = dict[str, Any]
JSON = {"Content-Type": "application/fhir+json"}


class Stream:
    """The events of one open ``/api/tail`` response, read as they come."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response
        self.seen: list[Event] = []

    async def next(self) -> Event:
        """The next event (comments and ``retry`` lines skipped)."""
        data: list[str] = []
        while True:
            raw = await self.response.content.readline()
            assert raw, "the stream ended"
            line = raw.decode().rstrip("\n")
            if not line:
                if data:
                    event: Event = json.loads("".join(data))
                    self.seen.append(event)
                    return event
                continue
            if line.startswith("data: "):
                data.append(line.removeprefix("data: "))

    async def until(self, wanted: Callable[[Event], bool], what: str) -> Event:
        """Read on until an event passes ``wanted``; returns it."""

        async def read() -> Event:
            while not wanted(event := await self.next()):
                pass
            return event

        return await eventually(read, what)

    def close(self) -> None:
        self.response.close()


async def open_stream(client: Client, **params: str) -> Stream:
    """Open the tail with ``params`` and wait until it reads from the end of the log."""
    response = await client.get("/dashboard/api/tail", params=params)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    stream = Stream(response)
    ready = await stream.next()
    assert ready["kind"] == "ready"
    return stream


async def create(browser: Browser, resource: dict[str, Any]) -> dict[str, Any]:
    response = await browser.fhir(
        "POST", f"/fhir/R4/{resource['resourceType']}", json=resource, headers=JSON
    )
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def change_of(resource: dict[str, Any]) -> Callable[[Event], bool]:
    def wanted(event: Event) -> bool:
        return bool(event["kind"] == "change" and event["resource_id"] == resource["id"])

    return wanted


async def test_a_write_appears_on_the_stream_with_its_fields(browser: Browser) -> None:
    stream = await open_stream(browser.client)
    try:
        patient = await create(browser, {"resourceType": "Patient", "gender": "female"})
        event = await stream.until(change_of(patient), "the Patient's change event")
    finally:
        stream.close()
    assert event["resource_type"] == "Patient" and event["interaction"] == "create"
    assert event["project"] == "p1" and event["version"] == patient["meta"]["versionId"]
    assert event["author"].startswith("ApiKey/")
    assert event["topic"] == CHANGES
    position = f"{event['topic']}/{event['partition']}/{event['offset']}"
    assert event["links"] == {
        "record": f"/dashboard/events/{position}",
        "trace": f"/dashboard/trace/{event['ref']}",
    }
    assert datetime.fromisoformat(event["time"]).tzinfo is not None


async def test_filters_choose_what_a_client_gets(browser: Browser) -> None:
    updates = await open_stream(browser.client, type="Observation", interaction="update")
    other = await new_client(browser.client.server)
    try:
        await sign_in(other, browser.key)
        by_id = await open_stream(other, kinds="change", id="watched")
        observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
        await create(browser, {"resourceType": "Patient"})
        created = await create(browser, observation)
        changed = await browser.fhir(
            "PUT",
            f"/fhir/R4/Observation/{created['id']}",
            json={**observation, "id": created["id"], "status": "amended"},
            headers=JSON,
        )
        assert changed.status == 200
        first = await updates.until(lambda e: True, "the first event through the filter")
        assert first["kind"] == "change" and first["interaction"] == "update"
        assert first["resource_id"] == created["id"]
        watched = await browser.fhir(
            "PUT", "/fhir/R4/Patient/watched", json={"resourceType": "Patient"}, headers=JSON
        )
        assert watched.status == 201
        only = await by_id.until(lambda e: True, "the first event of resource id 'watched'")
        assert only["resource_type"] == "Patient" and only["resource_id"] == "watched"
        by_id.close()
    finally:
        updates.close()
        await other.close()


async def test_bad_filters_are_refused(browser: Browser) -> None:
    response = await browser.client.get("/dashboard/api/tail", params={"kinds": "changes"})
    assert response.status == 400 and "kinds" in (await response.json())["error"]
    page = await browser.page("/dashboard/tail?kinds=bogus")
    assert "kinds" in page and 'id="tail"' in page


async def test_head_of_the_stream_is_its_headers_and_the_connection_goes_on(
    browser: Browser,
) -> None:
    for _ in range(2):  # the second request rides the same connection
        response = await browser.client.head("/dashboard/api/tail")
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert await response.read() == b""
    assert (await browser.client.get("/dashboard/api/stats")).status == 200


async def test_another_projects_stream_never_carries_this_ones_events(browser: Browser) -> None:
    other = await new_client(browser.client.server)
    try:
        await sign_in(other, browser.other_key)
        theirs = await open_stream(other)
        await create(browser, {"resourceType": "Patient", "id": "p1-only"} | {"gender": "male"})
        mine = await other.post(
            "/fhir/R4/Patient",
            json={"resourceType": "Patient"},
            headers={**JSON, "Authorization": f"Bearer {browser.other_key}"},
        )
        assert mine.status == 201
        own = (await mine.json())["id"]
        await theirs.until(lambda e: e.get("resource_id") == own, "p2's own write")
        theirs.close()
        assert theirs.seen[0]["project"] == "p2"
        assert all(e.get("project") in (None, "p2") for e in theirs.seen), theirs.seen
    finally:
        await other.close()


def _change(project: str, n: int) -> OutgoingMessage:
    event = ChangeEvent(
        event_id=str(uuid.uuid4()),
        project=project,
        interaction="create",
        resource_type="Basic",
        resource_id=f"flood-{n}",
        version_id="1",
        time=datetime.now(UTC),
    )
    return OutgoingMessage(event.key, event.model_dump_json().encode())


async def test_a_flood_is_sampled_on_the_server_and_said_so(browser: Browser) -> None:
    stream = await open_stream(browser.client, type="Basic")
    log = browser.engine.event_log
    assert log is not None
    try:
        await log.publish_many(CHANGES, [_change("p1", n) for n in range(400)])
        notice = await stream.until(lambda e: e["kind"] == "sampled", "a sampled notice")
    finally:
        stream.close()
    assert notice["shown"] < notice["matched"] and notice["max_per_second"] == 20
    shown = [e for e in stream.seen if e["kind"] == "change"]
    assert 0 < len(shown) <= 20  # the first second's budget, spread over what matched


async def test_the_page_has_the_filters_and_the_stream(browser: Browser) -> None:
    page = await browser.page("/dashboard/tail?type=Observation&kinds=change,delivery")
    assert 'id="tail"' in page and 'data-stream="/dashboard/api/tail"' in page
    assert "tail.js" in page and 'value="Observation"' in page
    assert 'value="change" checked' in page and 'value="execution" ' in page
    assert 'id="tail-pause"' in page


def dashboard_app(browser: Browser) -> web.Application:
    """The dashboard sub-application mounted on the engine's application."""
    for resource in browser.client.app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            app: web.Application = resource.get_info()["app"]
            return app
    raise AssertionError("no dashboard mounted")


async def test_one_tailer_serves_every_client_and_stops_with_the_last(browser: Browser) -> None:
    tailer = dashboard_app(browser)[TAILER]
    first = await open_stream(browser.client)
    second = await open_stream(browser.client, kinds="change")
    assert tailer.running and tailer.clients == 2
    first.close()
    second.close()
    await eventually(lambda: not tailer.running, "the tailer to stop with its last client")
    again = await open_stream(browser.client)
    try:
        assert tailer.running
    finally:
        again.close()


async def test_stopping_the_tailer_ends_every_stream(browser: Browser) -> None:
    tailer = Tailer(lambda: browser.engine.event_log)
    client = await tailer.subscribe("p1", TailFilter())
    await tailer.stop()
    assert await client.queue.get() is None and not tailer.running


def test_filters_parse_references_and_kinds() -> None:
    parsed = TailFilter.parse(
        {"kinds": "delivery,execution", "bot": "7", "subscription": "Subscription/s1"}
    )
    assert parsed.kinds == {"delivery", "execution"}
    assert parsed.bot == "Bot/7" and parsed.subscription == "s1"
    failed = TailFilter.parse({"outcome": "failed"})
    assert failed.matches({"kind": "execution", "outcome": "timeout"})
    assert not failed.matches({"kind": "execution", "outcome": "success"})
    assert not failed.matches({"kind": "change"})  # a change has no outcome
    for bad in ({"kinds": "everything"}, {"interaction": "read"}):
        try:
            TailFilter.parse(bad)
        except BadRequest:
            continue
        raise AssertionError(f"{bad} was taken")


def test_a_client_gets_at_most_its_rate_picked_evenly() -> None:
    client = TailClient("p1", TailFilter(), rate=20)
    events = [{"kind": "change", "project": "p1", "n": n} for n in range(100)]
    client.deliver([*events, {"kind": "change", "project": "p2", "n": -1}], now=0.0)
    queued = [client.queue.get_nowait() for _ in range(client.queue.qsize())]
    shown = [e for e in queued if e and e["kind"] == "change"]
    assert [e["n"] for e in shown] == list(range(0, 100, 5))
    notice = queued[-1]
    assert notice is not None and notice["kind"] == "sampled"
    assert (notice["matched"], notice["shown"], notice["ratio"]) == (100, 20, 5.0)
    client.deliver(events[:30], now=0.5)  # half a second later: half the budget is back
    assert client.queue.qsize() == 10 + 1


@pytest.mark.integration
async def test_the_page_lists_pauses_and_resumes_in_a_browser(dashboard: Dashboard) -> None:
    page = dashboard.page
    await page.goto("/dashboard/tail")
    await page.get_by_label("resource type").fill("Patient")
    await page.get_by_role("checkbox", name="execution").uncheck()
    await page.get_by_role("button", name="Apply").click()
    # Empty fields are left out; the checked kinds go as one list, as the API takes it.
    await expect(page).to_have_url(
        re.compile(r"/dashboard/tail\?type=Patient&kinds=change%2Cnotification%2Cdelivery$")
    )
    await expect(page.locator("#tail-status")).to_contain_text("project p1", timeout=WAIT_MS)
    first = await dashboard.fhir("POST", "Patient", {"resourceType": "Patient"})
    rows = page.locator("#tail-rows tr")
    await expect(rows.first).to_contain_text(f"Patient/{first['id']}", timeout=WAIT_MS)
    await page.get_by_role("button", name="Pause").click()
    second = await dashboard.fhir("POST", "Patient", {"resourceType": "Patient"})
    await expect(page.locator("#tail-paused")).to_contain_text("1 since", timeout=WAIT_MS)
    await expect(page.locator("#tail-count")).to_have_text("2")
    await expect(rows).to_have_count(1)  # what was shown stays as it was
    await page.get_by_role("button", name="Resume").click()
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text(f"Patient/{second['id']}")
    await rows.first.get_by_role("link", name="record").click()
    await expect(page.locator("#payload")).to_contain_text(second["id"], timeout=WAIT_MS)
