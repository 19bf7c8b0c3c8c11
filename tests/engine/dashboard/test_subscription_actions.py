"""The actions on one subscription: status, $explain, redelivery, $resend, dead letters; each
asked for first, audited, refused without the CSRF token."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from fhirbots.engine.delivery.resthook import HEADER_EVENT_NUMBER
from tests.engine.scenarios.dashboard import (
    LOOPBACK,
    Browser,
    audit_events,
    create_patient,
    create_subscription,
    hook_url,
    key_author,
    subscription_json,
    subscription_status,
)
from tests.engine.scenarios.delivery import Receiver
from tests.waiting import eventually

ONE_ATTEMPT: dict[str, Any] = {**LOOPBACK, "delivery_max_attempts": 1}
"""A failed attempt is at once a dead letter."""


async def _dead_letters(browser: Browser, subscription_id: str, n: int) -> list[dict[str, Any]]:
    async def listed() -> tuple[list[dict[str, Any]]] | None:
        dead: list[dict[str, Any]] = (await subscription_json(browser, subscription_id))[
            "dead_letters"
        ]
        return (dead,) if len(dead) == n else None  # a tuple: an empty list is a result too

    what = f"{n} dead letter(s) of Subscription/{subscription_id}"
    found: list[dict[str, Any]] = (await eventually(listed, what))[0]
    return found


async def _fail(_: web.Request, __: int) -> web.StreamResponse:
    return web.Response(status=500, text="receiver down")


async def test_disable_and_enable_change_the_status_and_are_audited(browser: Browser) -> None:
    subscription_id = await create_subscription(browser, "https://example.org/hook")
    path = f"/dashboard/subscriptions/{subscription_id}/status"
    page = await browser.page(f"/dashboard/subscriptions/{subscription_id}")
    assert 'id="disable"' in page and 'name="version" value="1"' in page

    asked = await browser.post(path, {"status": "off", "version": "1"})
    assert asked.status == 200
    question = await asked.text()
    assert "Are you sure" in question and 'name="confirm" value="yes"' in question
    assert await subscription_status(browser, subscription_id) == "active"  # nothing done yet

    done = await browser.post(path, {"status": "off", "version": "1", "confirm": "yes"})
    assert done.status == 303
    assert done.headers["Location"].endswith(f"/subscriptions/{subscription_id}?done=disabled")
    assert await subscription_status(browser, subscription_id) == "off"
    page = await browser.page(done.headers["Location"])
    assert "Subscription disabled" in page and 'id="enable"' in page

    stale = await browser.post(path, {"status": "active", "version": "1", "confirm": "yes"})
    assert stale.status == 412  # If-Match: the version shown is no longer current
    assert await subscription_status(browser, subscription_id) == "off"
    again = await browser.post(path, {"status": "active", "version": "2", "confirm": "yes"})
    assert again.status == 303
    assert await subscription_status(browser, subscription_id) == "active"

    audits = await audit_events(browser, "subscription-status")
    assert sorted(a["outcomeDesc"] for a in audits) == [
        f"Subscription/{subscription_id} status active -> off",
        f"Subscription/{subscription_id} status off -> active",
    ]
    author = await key_author(browser)
    for audit in audits:
        assert audit["agent"][0]["who"]["reference"] == author
        assert audit["entity"][0]["what"]["reference"] == f"Subscription/{subscription_id}"


async def test_explain_tells_whether_it_would_fire_and_why_not(browser: Browser) -> None:
    subscription_id = await create_subscription(browser, "https://example.org/hook")
    path = f"/dashboard/subscriptions/{subscription_id}/explain"
    male = json.dumps({"resourceType": "Patient", "gender": "male"})
    response = await browser.post(path, {"resource": male})
    page = await response.text()
    assert response.status == 200
    assert 'id="explain-verdict">does not fire<' in page
    assert "gender" in page and "<code>male</code>" in page
    stored = await create_patient(browser)
    fires = await (await browser.post(path, {"reference": f"Patient/{stored}"})).text()
    assert 'id="explain-verdict">fires<' in fires
    broken = await (await browser.post(path, {"resource": "{not json"})).text()
    assert "not JSON" in broken
    assert await audit_events(browser, "subscription-status") == []


@pytest.mark.parametrize("dashboard_settings", [ONE_ATTEMPT])
async def test_a_dead_letter_is_listed_retried_once_fixed_or_discarded(
    browser: Browser, receiver: Receiver
) -> None:
    receiver.on("/hook", _fail)
    subscription_id = await create_subscription(browser, hook_url(receiver))
    await create_patient(browser)
    (dead,) = await _dead_letters(browser, subscription_id, 1)
    assert dead["event_number"] == 1 and "500" in (dead["error"] or "")
    page = await browser.page(f"/dashboard/subscriptions/{subscription_id}")
    assert f'data-id="{dead["id"]}"' in page and 'id="dead-count">1<' in page

    del receiver.behaviours["/hook"]  # the receiver is fixed
    retry = f"/dashboard/subscriptions/{subscription_id}/dead-letters/retry"
    asked = await browser.post(retry, {"id": dead["id"]})
    assert asked.status == 200 and "Are you sure" in await asked.text()
    done = await browser.post(retry, {"id": dead["id"], "confirm": "yes"})
    assert done.status == 303 and "done=retried&n=1" in done.headers["Location"]
    first, second = await receiver.wait_for("/hook", 2)
    assert first.headers[HEADER_EVENT_NUMBER] == second.headers[HEADER_EVENT_NUMBER] == "1"
    await _dead_letters(browser, subscription_id, 0)

    receiver.on("/hook", _fail)
    await create_patient(browser)
    (dead,) = await _dead_letters(browser, subscription_id, 1)
    assert dead["event_number"] == 2
    discard = f"/dashboard/subscriptions/{subscription_id}/dead-letters/discard"
    done = await browser.post(discard, {"id": dead["id"], "confirm": "yes"})
    assert done.status == 303 and "done=discarded&n=1" in done.headers["Location"]
    await _dead_letters(browser, subscription_id, 0)
    dispatcher = browser.engine.dispatcher
    assert dispatcher is not None
    row = await dispatcher.store.get("p1", dead["id"])
    assert row is not None and row.state == "discarded"
    nothing = await browser.post(discard, {"confirm": "yes"})
    assert nothing.status == 400  # neither a selection nor all

    author = await key_author(browser)
    for subtype in ("dead-letters-retry", "dead-letters-discard"):
        (audit,) = await audit_events(browser, subtype)
        assert audit["agent"][0]["who"]["reference"] == author
        assert audit["outcomeDesc"].startswith("1 dead letter(s)")


@pytest.mark.parametrize("dashboard_settings", [LOOPBACK])
async def test_an_event_is_delivered_again_with_its_event_number(
    browser: Browser, receiver: Receiver
) -> None:
    subscription_id = await create_subscription(browser, hook_url(receiver))
    patient = await create_patient(browser)
    (original,) = await receiver.wait_for("/hook", 1)
    path = f"/dashboard/subscriptions/{subscription_id}/redeliver"
    asked = await browser.post(path, {"first": "1"})
    assert asked.status == 200 and "Are you sure" in await asked.text()
    assert len(receiver.at("/hook")) == 1
    done = await browser.post(path, {"first": "1", "confirm": "yes"})
    assert done.status == 303 and "done=redelivered&n=1&failed=0" in done.headers["Location"]
    _, again = await receiver.wait_for("/hook", 2)
    assert again.headers[HEADER_EVENT_NUMBER] == original.headers[HEADER_EVENT_NUMBER] == "1"
    assert again.body == original.body  # the notification as it was sent
    (audit,) = await audit_events(browser, "redeliver")
    assert audit["outcomeDesc"].endswith("1 delivered")
    missing = await browser.post(path, {"first": "7", "last": "9", "confirm": "yes"})
    assert missing.status == 404

    resend = f"/dashboard/subscriptions/{subscription_id}/resend"
    done = await browser.post(resend, {"resource": f"Patient/{patient}", "confirm": "yes"})
    assert done.status == 303 and "done=resent&event=2" in done.headers["Location"]
    *_, third = await receiver.wait_for("/hook", 3)
    assert third.headers[HEADER_EVENT_NUMBER] == "2"  # $resend: a new notification
    assert len(await audit_events(browser, "resend")) == 1


async def test_state_changes_without_the_csrf_token_are_refused(browser: Browser) -> None:
    subscription_id = await create_subscription(browser, "https://example.org/hook")
    base = f"/dashboard/subscriptions/{subscription_id}"
    for path, form in (
        ("/dashboard/subscriptions/new", {"criteria": "Patient?gender=male", "endpoint": "x"}),
        (f"{base}/status", {"status": "off", "version": "1", "confirm": "yes"}),
        (f"{base}/dead-letters/discard", {"all": "yes", "confirm": "yes"}),
        (f"{base}/redeliver", {"first": "1", "confirm": "yes"}),
    ):
        response = await browser.client.post(path, data=form, allow_redirects=False)
        assert response.status == 403, path
        forged = await browser.client.post(
            path, data={**form, "csrf": "forged"}, allow_redirects=False
        )
        assert forged.status == 403, path
    assert await subscription_status(browser, subscription_id) == "active"
    rows = await browser.engine.storage.current_resources("p1", "Subscription")
    assert [r.id for r in rows] == [subscription_id]
