"""The event browser's pages and JSON: a record as a row with its links, opened whole, the
search form and its errors."""

from __future__ import annotations

from fhirbots.schemas.topics import CHANGES
from tests.engine.scenarios.dashboard import HEART_RATE, Browser, found_events


async def test_a_change_is_found_by_key_and_opened_whole(browser: Browser) -> None:
    patient = await browser.create({"resourceType": "Patient", "gender": "other"})
    [item] = await found_events(browser, "the change by key", key=f"patient/{patient['id']}")
    assert item["kind"] == "change" and item["resource_id"] == patient["id"]
    assert item["key"] == f"p1/Patient/{patient['id']}"
    record = item["links"]["record"]
    assert record == f"/dashboard/events/{CHANGES}/{item['partition']}/{item['offset']}"
    assert item["links"]["trace"] == f"/dashboard/trace/{item['ref']}"
    whole = await browser.api(record.replace("/dashboard/", "/dashboard/api/", 1))
    assert whole["value"]["resource"]["gender"] == "other"
    assert whole["key"] == item["key"] and whole["headers"] == []
    assert whole["timestamp"].endswith("Z")
    page = await browser.page(record)
    assert "&#34;gender&#34;: &#34;other&#34;" in page and 'id="trace-link"' in page


async def test_the_page_lists_and_searches(browser: Browser) -> None:
    await browser.create(HEART_RATE)
    await found_events(browser, "the Observation", key="/Observation/")
    html = await browser.page("/dashboard/events?field=resource.code.coding.code%3D8867-4")
    assert 'id="events"' in html and "Observation/" in html and "8867-4" in html
    bad = await browser.page("/dashboard/events?partition=x")
    assert "partition" in bad and 'class="error"' in bad
