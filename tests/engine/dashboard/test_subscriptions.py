"""The subscriptions table and one subscription's page: counts and delivery figures, recent
attempts linking to their traces, secrets hidden, project scope."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhirbots.engine.dashboard.subscription_form import SECRET_URL
from tests.engine.scenarios.dashboard import (
    LOOPBACK,
    Browser,
    create_patient,
    create_subscription,
    hook_url,
    new_client,
    sign_in,
    subscription_json,
    subscription_status,
)
from tests.engine.scenarios.delivery import Receiver
from tests.waiting import eventually


@pytest.mark.parametrize("dashboard_settings", [LOOPBACK])
async def test_the_table_lists_a_subscription_with_its_counts(
    browser: Browser, receiver: Receiver
) -> None:
    subscription_id = await create_subscription(browser, hook_url(receiver))
    await create_patient(browser)
    await create_patient(browser, "male")  # matches nothing
    await receiver.wait_for("/hook", 1)
    stage = browser.engine.stats
    assert stage is not None

    async def counted() -> dict[str, Any] | None:
        await stage.tick(None, now=datetime.now(UTC) + timedelta(minutes=1))
        rows = (await browser.api("/dashboard/api/subscriptions"))["subscriptions"]
        row: dict[str, Any] = next(r for r in rows if r["id"] == subscription_id)
        delivery = row["delivery"]
        last = delivery["last_event"]
        done = row["matched"]["1h"] == 1 and last is not None and last["state"] == "delivered"
        return row if done else None

    row = await eventually(counted, "the notification counted and delivered")
    assert row["matched"] == {"1h": 1, "24h": 1}
    assert row["status"] == "active" and row["criteria"] == "Patient?gender=female"
    assert row["channel"] == {"type": "rest-hook", "endpoint": hook_url(receiver)}
    delivery = row["delivery"]
    assert delivery["events_since_start"] == 1
    assert delivery["last_event"]["event_number"] == 1
    assert delivery["dead_letters"] == 0 and delivery["consecutive_failures"] == 0
    assert delivery["lag_seconds"] == 0.0
    page = await browser.page("/dashboard/subscriptions")
    assert f'id="sub-{subscription_id}"' in page
    assert "Patient?gender=female" in page
    assert re.search(r'class="num matched-1h">1<', page)

    async def attempted() -> list[dict[str, Any]]:
        attempts: list[dict[str, Any]] = (await subscription_json(browser, subscription_id))[
            "attempts"
        ]
        return attempts

    (attempt,) = await eventually(attempted, "the delivery attempt recorded")
    assert attempt["outcome"] == "success" and attempt["status"] == 200
    assert attempt["event_number"] == 1 and attempt["traced"]
    detail = await browser.page(f"/dashboard/subscriptions/{subscription_id}")
    assert f'href="/dashboard/trace/{attempt["ref"]}"' in detail


async def test_another_project_sees_none_of_its_subscriptions(browser: Browser) -> None:
    subscription_id = await create_subscription(browser, "https://example.org/hook")
    other = await new_client(browser.client.server)
    try:
        csrf = await sign_in(other, browser.other_key)
        page = await (await other.get("/dashboard/subscriptions")).text()
        assert subscription_id not in page and 'id="no-subscriptions"' in page
        listing = await (await other.get("/dashboard/api/subscriptions")).json()
        assert listing["project"] == "p2" and listing["subscriptions"] == []
        detail = await other.get(f"/dashboard/subscriptions/{subscription_id}")
        assert detail.status == 404
        api = await other.get(f"/dashboard/api/subscriptions/{subscription_id}")
        assert api.status == 404
        for action, form in (
            ("status", {"status": "off", "version": "1", "confirm": "yes"}),
            ("redeliver", {"first": "1", "confirm": "yes"}),
            ("resend", {"resource": "Patient/x", "confirm": "yes"}),
            ("dead-letters/discard", {"all": "yes", "confirm": "yes"}),
            ("explain", {"resource": '{"resourceType": "Patient"}'}),
        ):
            response = await other.post(
                f"/dashboard/subscriptions/{subscription_id}/{action}",
                data={"csrf": csrf, **form},
                allow_redirects=False,
            )
            assert response.status == 404, action
        script = await other.get(
            "/dashboard/api/subscriptions", headers={"Authorization": f"Bearer {browser.other_key}"}
        )
        assert (await script.json())["subscriptions"] == []
    finally:
        await other.close()
    assert await subscription_status(browser, subscription_id) == "active"


async def test_the_page_hides_the_secret_and_header_values(browser: Browser) -> None:
    subscription_id = await create_subscription(
        browser,
        "https://example.org/hook",
        extension=[{"url": SECRET_URL, "valueString": "s3cret-value"}],
        channel={
            "type": "rest-hook",
            "endpoint": "https://example.org/hook",
            "header": ["Authorization: Bearer t0ken-value"],
        },
    )
    page = await browser.page(f"/dashboard/subscriptions/{subscription_id}")
    api = json.dumps(await subscription_json(browser, subscription_id))
    for shown in (page, api):
        assert "s3cret-value" not in shown and "t0ken-value" not in shown
    assert "Authorization: ••••••" in page
