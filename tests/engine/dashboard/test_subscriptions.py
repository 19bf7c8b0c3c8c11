"""The subscriptions views: the table and its figures, one subscription and its actions (status,
$explain, redelivery, $resend, dead letters), the new-subscription form; project scope, CSRF
and AuditEvents of every action."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from fhirbots.engine.dashboard.subscriptions import SECRET_URL, build_subscription, field_of
from fhirbots.engine.delivery.resthook import HEADER_EVENT_NUMBER
from fhirbots.subscriptions.definitions import FHIRPATH_CRITERIA_URL, INTERACTION_URL
from tests.engine.scenarios.dashboard import Browser, new_client, sign_in
from tests.engine.scenarios.delivery import Receiver
from tests.waiting import eventually

LOOPBACK: dict[str, Any] = {"allowed_endpoint_networks": ("127.0.0.0/8",)}
"""The receiver listens on 127.0.0.1, which delivery refuses unless allowed."""

ONE_ATTEMPT: dict[str, Any] = {**LOOPBACK, "delivery_max_attempts": 1}
"""A failed attempt is at once a dead letter."""

FHIR_JSON = {"Content-Type": "application/fhir+json"}


async def _create(browser: Browser, resource: dict[str, Any]) -> dict[str, Any]:
    path = f"/fhir/R4/{resource['resourceType']}"
    response = await browser.fhir("POST", path, json=resource, headers=FHIR_JSON)
    body: dict[str, Any] = await response.json()
    assert response.status == 201, body
    return body


async def _subscription(browser: Browser, endpoint: str, **extra: Any) -> str:
    resource = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "test",
        "criteria": "Patient?gender=female",
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"},
        **extra,
    }
    return str((await _create(browser, resource))["id"])


async def _patient(browser: Browser, gender: str = "female") -> str:
    return str((await _create(browser, {"resourceType": "Patient", "gender": gender}))["id"])


async def _status(browser: Browser, subscription_id: str) -> str:
    stored = await browser.engine.fhir.read("p1", "Subscription", subscription_id)
    assert stored.content is not None
    return str(stored.content["status"])


async def _audits(browser: Browser, subtype: str) -> list[dict[str, Any]]:
    history = await browser.engine.fhir.history("p1", "AuditEvent", count=1000)
    return [
        e.content
        for e in history.entries
        if e.content and (e.content.get("subtype") or [{}])[0].get("code") == subtype
    ]


async def _author(browser: Browser) -> str:
    return (await browser.engine.authenticator.authenticate(f"Bearer {browser.key}")).author


async def _detail(browser: Browser, subscription_id: str) -> dict[str, Any]:
    body: dict[str, Any] = await browser.api(f"/dashboard/api/subscriptions/{subscription_id}")
    return body


async def _dead_letters(browser: Browser, subscription_id: str, n: int) -> list[dict[str, Any]]:
    async def listed() -> tuple[list[dict[str, Any]]] | None:
        dead: list[dict[str, Any]] = (await _detail(browser, subscription_id))["dead_letters"]
        return (dead,) if len(dead) == n else None  # a tuple: an empty list is a result too

    what = f"{n} dead letter(s) of Subscription/{subscription_id}"
    found: list[dict[str, Any]] = (await eventually(listed, what))[0]
    return found


def _hook(receiver: Receiver) -> str:
    return f"{receiver.url}/hook"


async def _fail(_: web.Request, __: int) -> web.StreamResponse:
    return web.Response(status=500, text="receiver down")


# -- the table -------------------------------------------------------------------------------


@pytest.mark.parametrize("dashboard_settings", [LOOPBACK])
async def test_the_table_lists_a_subscription_with_its_counts(
    browser: Browser, receiver: Receiver
) -> None:
    subscription_id = await _subscription(browser, _hook(receiver))
    await _patient(browser)
    await _patient(browser, "male")  # matches nothing
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
    assert row["channel"] == {"type": "rest-hook", "endpoint": _hook(receiver)}
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
        attempts: list[dict[str, Any]] = (await _detail(browser, subscription_id))["attempts"]
        return attempts

    (attempt,) = await eventually(attempted, "the delivery attempt recorded")
    assert attempt["outcome"] == "success" and attempt["status"] == 200
    assert attempt["event_number"] == 1 and attempt["traced"]
    detail = await browser.page(f"/dashboard/subscriptions/{subscription_id}")
    assert f'href="/dashboard/trace/{attempt["ref"]}"' in detail


async def test_another_project_sees_none_of_its_subscriptions(browser: Browser) -> None:
    subscription_id = await _subscription(browser, "https://example.org/hook")
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
    assert await _status(browser, subscription_id) == "active"


# -- one subscription ------------------------------------------------------------------------


async def test_disable_and_enable_change_the_status_and_are_audited(browser: Browser) -> None:
    subscription_id = await _subscription(browser, "https://example.org/hook")
    path = f"/dashboard/subscriptions/{subscription_id}/status"
    page = await browser.page(f"/dashboard/subscriptions/{subscription_id}")
    assert 'id="disable"' in page and 'name="version" value="1"' in page

    asked = await browser.post(path, {"status": "off", "version": "1"})
    assert asked.status == 200
    question = await asked.text()
    assert "Are you sure" in question and 'name="confirm" value="yes"' in question
    assert await _status(browser, subscription_id) == "active"  # nothing done yet

    done = await browser.post(path, {"status": "off", "version": "1", "confirm": "yes"})
    assert done.status == 303
    assert done.headers["Location"].endswith(f"/subscriptions/{subscription_id}?done=disabled")
    assert await _status(browser, subscription_id) == "off"
    page = await browser.page(done.headers["Location"])
    assert "Subscription disabled" in page and 'id="enable"' in page

    stale = await browser.post(path, {"status": "active", "version": "1", "confirm": "yes"})
    assert stale.status == 412  # If-Match: the version shown is no longer current
    assert await _status(browser, subscription_id) == "off"
    again = await browser.post(path, {"status": "active", "version": "2", "confirm": "yes"})
    assert again.status == 303
    assert await _status(browser, subscription_id) == "active"

    audits = await _audits(browser, "subscription-status")
    assert sorted(a["outcomeDesc"] for a in audits) == [
        f"Subscription/{subscription_id} status active -> off",
        f"Subscription/{subscription_id} status off -> active",
    ]
    author = await _author(browser)
    for audit in audits:
        assert audit["agent"][0]["who"]["reference"] == author
        assert audit["entity"][0]["what"]["reference"] == f"Subscription/{subscription_id}"


async def test_explain_tells_whether_it_would_fire_and_why_not(browser: Browser) -> None:
    subscription_id = await _subscription(browser, "https://example.org/hook")
    path = f"/dashboard/subscriptions/{subscription_id}/explain"
    male = json.dumps({"resourceType": "Patient", "gender": "male"})
    response = await browser.post(path, {"resource": male})
    page = await response.text()
    assert response.status == 200
    assert 'id="explain-verdict">does not fire<' in page
    assert "gender" in page and "<code>male</code>" in page
    stored = await _patient(browser)
    fires = await (await browser.post(path, {"reference": f"Patient/{stored}"})).text()
    assert 'id="explain-verdict">fires<' in fires
    broken = await (await browser.post(path, {"resource": "{not json"})).text()
    assert "not JSON" in broken
    assert await _audits(browser, "subscription-status") == []


@pytest.mark.parametrize("dashboard_settings", [ONE_ATTEMPT])
async def test_a_dead_letter_is_listed_retried_once_fixed_or_discarded(
    browser: Browser, receiver: Receiver
) -> None:
    receiver.on("/hook", _fail)
    subscription_id = await _subscription(browser, _hook(receiver))
    await _patient(browser)
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
    await _patient(browser)
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

    author = await _author(browser)
    for subtype in ("dead-letters-retry", "dead-letters-discard"):
        (audit,) = await _audits(browser, subtype)
        assert audit["agent"][0]["who"]["reference"] == author
        assert audit["outcomeDesc"].startswith("1 dead letter(s)")


@pytest.mark.parametrize("dashboard_settings", [LOOPBACK])
async def test_an_event_is_delivered_again_with_its_event_number(
    browser: Browser, receiver: Receiver
) -> None:
    subscription_id = await _subscription(browser, _hook(receiver))
    patient = await _patient(browser)
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
    (audit,) = await _audits(browser, "redeliver")
    assert audit["outcomeDesc"].endswith("1 delivered")
    missing = await browser.post(path, {"first": "7", "last": "9", "confirm": "yes"})
    assert missing.status == 404

    resend = f"/dashboard/subscriptions/{subscription_id}/resend"
    done = await browser.post(resend, {"resource": f"Patient/{patient}", "confirm": "yes"})
    assert done.status == 303 and "done=resent&event=2" in done.headers["Location"]
    *_, third = await receiver.wait_for("/hook", 3)
    assert third.headers[HEADER_EVENT_NUMBER] == "2"  # $resend: a new notification
    assert len(await _audits(browser, "resend")) == 1


async def test_the_page_hides_the_secret_and_header_values(browser: Browser) -> None:
    subscription_id = await _subscription(
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
    api = json.dumps(await _detail(browser, subscription_id))
    for shown in (page, api):
        assert "s3cret-value" not in shown and "t0ken-value" not in shown
    assert "Authorization: ••••••" in page


# -- the new-subscription form ---------------------------------------------------------------


async def test_the_form_creates_a_valid_subscription(browser: Browser) -> None:
    form = await browser.page("/dashboard/subscriptions/new")
    assert 'name="criteria"' in form and 'name="fhirpath"' in form and 'name="secret"' in form
    response = await browser.client.post(
        "/dashboard/subscriptions/new",
        data=[
            ("csrf", browser.csrf),
            ("reason", "female patients"),
            ("status", "active"),
            ("criteria", "Patient?gender=female"),
            ("fhirpath", "%previous.id.empty()"),
            ("interactions", "create"),
            ("interactions", "delete"),
            ("channel_type", "rest-hook"),
            ("endpoint", "https://example.org/hook"),
            ("headers", "Authorization: Bearer abc\r\n\r\nX-Team: ops"),
            ("secret", "hmac-key"),
            ("payload", "application/fhir+json"),
            ("content", "id-only"),
        ],
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    location = response.headers["Location"]
    match = re.search(r"/dashboard/subscriptions/([^?]+)\?done=created$", location)
    assert match is not None
    stored = await browser.engine.fhir.read("p1", "Subscription", match.group(1))
    resource = stored.content
    assert resource is not None
    assert (
        resource["criteria"] == "Patient?gender=female" and resource["reason"] == "female patients"
    )
    assert resource["channel"]["header"] == ["Authorization: Bearer abc", "X-Team: ops"]
    assert resource["channel"]["_payload"]["extension"][0]["valueCode"] == "id-only"
    extensions = {
        (e["url"], next(v for k, v in e.items() if k != "url")) for e in resource["extension"]
    }
    assert extensions == {
        (FHIRPATH_CRITERIA_URL, "%previous.id.empty()"),
        (SECRET_URL, "hmac-key"),
        (INTERACTION_URL, "create"),
        (INTERACTION_URL, "delete"),
    }
    assert "Subscription created" in await browser.page(location)
    (audit,) = await _audits(browser, "subscription-create")
    assert audit["agent"][0]["who"]["reference"] == await _author(browser)


async def test_an_invalid_criterion_is_shown_beside_its_field_and_creates_nothing(
    browser: Browser,
) -> None:
    fields = {
        "criteria": "Patient?no-such-parameter=1",
        "endpoint": "https://example.org/hook",
        "interactions": "create",
    }
    response = await browser.post("/dashboard/subscriptions/new", fields)
    page = await response.text()
    assert response.status == 422
    found = re.search(
        r'id="f-criteria"[^>]*>\s*<div class="field-error" id="error-criteria"[^>]*>([^<]+)<', page
    )
    assert found is not None, page
    assert "no-such-parameter" in found.group(1)
    assert 'id="form-problems"' not in page
    assert 'value="Patient?no-such-parameter=1"' in page  # what was typed is kept
    bad_fhirpath = await browser.post(
        "/dashboard/subscriptions/new",
        {**fields, "criteria": "Patient?gender=female", "fhirpath": "name.where("},
    )
    assert bad_fhirpath.status == 422
    assert 'id="error-fhirpath"' in await bad_fhirpath.text()
    several = await browser.post("/dashboard/subscriptions/new", {"criteria": "Patient?x=1"})
    text = await several.text()  # no endpoint, no interaction and a bad criterion: all shown
    for name in ("endpoint", "interactions", "criteria"):
        assert f'id="error-{name}"' in text, name
    assert await browser.engine.storage.current_resources("p1", "Subscription") == []


async def test_state_changes_without_the_csrf_token_are_refused(browser: Browser) -> None:
    subscription_id = await _subscription(browser, "https://example.org/hook")
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
    assert await _status(browser, subscription_id) == "active"
    rows = await browser.engine.storage.current_resources("p1", "Subscription")
    assert [r.id for r in rows] == [subscription_id]


# -- building the resource -------------------------------------------------------------------


def test_the_default_interactions_need_no_extension() -> None:
    resource, fields, errors = build_subscription(
        {
            "criteria": "Patient?gender=female",
            "interactions": ["update", "create"],
            "channel_type": "websocket",
        }
    )
    assert errors == {} and fields == {} and "extension" not in resource
    assert resource["channel"] == {"type": "websocket"}
    assert resource["status"] == "active" and resource["reason"]


def test_issues_are_placed_by_the_element_they_name() -> None:
    extension_fields = {0: "fhirpath", 1: "secret"}
    assert field_of("Subscription.criteria", extension_fields) == "criteria"
    assert field_of("Subscription.criteria.extension[0]", extension_fields) == "criteria"
    assert field_of("Subscription.channel.endpoint", extension_fields) == "endpoint"
    assert field_of("Subscription.channel.header[1]", extension_fields) == "headers"
    assert field_of("Subscription.extension[1].valueString", extension_fields) == "secret"
    assert (
        field_of("Subscription.extension(fhir-path-criteria-expression): bad", extension_fields)
        == "fhirpath"
    )
    assert field_of("Subscription.criteriaX", extension_fields) is None
    assert field_of("Subscription.end", extension_fields) is None
