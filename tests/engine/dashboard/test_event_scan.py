"""What the event browser reads: topics read by partition and offset or by time, searched by
key, header and JSON field, paged with a cursor, other projects' records hidden."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fhirbots.engine.eventlog.port import HEADER_ERROR, OutgoingMessage
from fhirbots.engine.web.auth import hash_key
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.topics import CHANGES, deadletter_topic
from tests.engine.scenarios.dashboard import HEART_RATE, Browser, found_events


async def test_a_change_is_found_by_a_json_field_walking_lists(browser: Browser) -> None:
    observation = await browser.create(HEART_RATE)
    items = await found_events(
        browser, "the Observation by its code", field="resource.code.coding.code=8867-4"
    )
    assert [i["resource_id"] for i in items] == [observation["id"]]
    none = await browser.api("/dashboard/api/events", field="resource.code.coding.code=1-1")
    assert none["items"] == [] and none["scanned"] >= 1
    present = await browser.api("/dashboard/api/events", field="resource.code.coding.system")
    assert [i["resource_id"] for i in present["items"]] == [observation["id"]]


async def test_pages_follow_a_cursor_newest_first(browser: Browser) -> None:
    ids = [(await browser.create({"resourceType": "Patient"}))["id"] for _ in range(5)]
    await found_events(browser, "the last Patient", key=ids[-1])
    seen: list[str] = []
    stamps: list[str] = []
    params = {"key": "/Patient/", "limit": "2"}
    for _ in range(10):
        page = await browser.api("/dashboard/api/events", **params)
        assert len(page["items"]) <= 2 and page["order"] == "newest"
        seen.extend(i["resource_id"] for i in page["items"])
        stamps.extend(i["timestamp"] for i in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    # Newest first across partitions by the log's timestamps (one relay batch shares one).
    assert stamps == sorted(stamps, reverse=True)
    html = await browser.page("/dashboard/events?key=%2FPatient%2F&limit=2")
    assert 'id="next-page"' in html and "cursor=" in html and "scanned" in html


async def test_oldest_first_from_a_time_or_an_offset(browser: Browser) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    first = await browser.create({"resourceType": "Patient"})
    second = await browser.create({"resourceType": "Patient"})
    await found_events(browser, "the second Patient", key=second["id"])
    since = before.isoformat()
    page = await browser.api("/dashboard/api/events", since=since, key="/Patient/")
    assert page["order"] == "oldest"
    assert sorted(i["resource_id"] for i in page["items"]) == sorted([first["id"], second["id"]])
    stamps = [i["timestamp"] for i in page["items"]]
    assert stamps == sorted(stamps)  # (one relay batch may carry both, with one timestamp)
    [item] = (await browser.api("/dashboard/api/events", key=first["id"]))["items"]
    at = await browser.api(
        "/dashboard/api/events", partition=str(item["partition"]), offset=str(item["offset"])
    )
    assert at["items"][0]["resource_id"] == first["id"]
    bad = await browser.client.get("/dashboard/api/events", params={"offset": "3"})
    assert bad.status == 400 and "partition" in (await bad.json())["error"]
    unknown = await browser.client.get("/dashboard/api/events", params={"topic": "secrets"})
    assert unknown.status == 400


async def test_headers_are_searched_by_name_and_value(browser: Browser) -> None:
    log = browser.engine.event_log
    assert log is not None
    event = ChangeEvent(
        event_id=str(uuid.uuid4()),
        project="p1",
        interaction="create",
        resource_type="Basic",
        resource_id="with-header",
        version_id="1",
        time=datetime.now(UTC),
    )
    await log.publish(
        CHANGES, event.key, event.model_dump_json().encode(), (("x-origin", b"import-7"),)
    )
    [item] = await found_events(browser, "the record by header", header="x-origin=import-7")
    assert item["resource_id"] == "with-header"
    assert (await browser.api("/dashboard/api/events", header="x-origin=import-8"))["items"] == []
    assert len((await browser.api("/dashboard/api/events", header="X-Origin"))["items"]) == 1


async def test_other_projects_records_are_hidden_from_their_keys(browser: Browser) -> None:
    mine = await browser.create({"resourceType": "Patient"})
    [item] = await found_events(browser, "p1's change", key=mine["id"])
    viewer = "fhb_viewer_" + uuid.uuid4().hex
    await browser.engine.storage.add_api_key("p2", hash_key(viewer), name="viewer", admin=False)
    log = browser.engine.event_log
    assert log is not None
    forged = ChangeEvent(
        event_id=str(uuid.uuid4()),
        project="p1",
        interaction="create",
        resource_type="Basic",
        resource_id="forged",
        version_id="1",
        time=datetime.now(UTC),
    )
    # A key of p2 over a payload of p1: neither project's callers see it as theirs.
    await log.publish(CHANGES, "p2/Basic/forged", forged.model_dump_json().encode())
    for key in (viewer, browser.other_key):
        # A script's key, not the session: the API answers as that key's project.
        script = {"Authorization": f"Bearer {key}"}
        listed = await browser.client.get(
            "/dashboard/api/events", params={"limit": "200"}, headers=script
        )
        body = await listed.json()
        assert listed.status == 200 and body["scanned"] >= 1
        assert body["items"] == [], body["items"]
        record = item["links"]["record"].replace("/dashboard/", "/dashboard/api/", 1)
        one = await browser.client.get(record, headers=script)
        assert one.status == 404
        trace = await browser.client.get(f"/dashboard/api/trace/{item['ref']}", headers=script)
        assert trace.status == 404
    own = await browser.api("/dashboard/api/events", key="forged")
    assert own["items"] == []


async def test_dead_letters_without_a_payload_go_by_their_key(browser: Browser) -> None:
    log = browser.engine.event_log
    assert log is not None
    topic = deadletter_topic(CHANGES)
    await log.create_topic(CHANGES)
    error = ((HEADER_ERROR, b"not JSON"),)
    await log.publish_many(
        topic,
        [
            OutgoingMessage("p1/Patient/broken", b"\x00garbage", error),
            OutgoingMessage("p2/Patient/broken", b"\x00garbage", error),
            OutgoingMessage("p1/Patient/claimed", b'{"project": "p2"}', error),
        ],
    )
    page = await browser.api("/dashboard/api/events", topic=topic)
    assert [i["key"] for i in page["items"]] == ["p1/Patient/broken"]
    [item] = page["items"]
    assert item["error"] == "not JSON" and "kind" not in item
    whole = await browser.api(item["links"]["record"].replace("/dashboard/", "/dashboard/api/", 1))
    assert whole["value_text"].endswith("garbage")
    html = await browser.page(item["links"]["record"])
    assert "not JSON" in html
