"""The dashboard in a real browser: what a person sees and clicks, waited for on the page.

Each test waits for visible state with Playwright's auto-waiting assertions, never for a
guessed time. With ``FHIRBOTS_SCREENSHOTS=1`` the tests save the docs' pictures of the pages
they show (see ``tests/engine/scenarios/browser.py``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Page, expect

from fhirbots.engine.dashboard.sessions import SESSION_COOKIE
from tests.engine.scenarios.browser import WAIT_MS, Dashboard
from tests.engine.scenarios.delivery import Receiver

pytestmark = pytest.mark.integration

LOOPBACK = {"allowed_endpoint_networks": ("127.0.0.0/8",)}
"""Engine settings that let Subscriptions deliver to a receiver on this machine."""


async def _write_some(dashboard: Dashboard, family: str) -> None:
    """A few writes of project ``p1``: creates of two types, an update and a delete."""
    for n in range(3):
        await dashboard.fhir(
            "PUT",
            f"Patient/{family.lower()}-{n}",
            {
                "resourceType": "Patient",
                "id": f"{family.lower()}-{n}",
                "name": [{"family": family}],
            },
        )
    for value in (120, 135):
        await dashboard.fhir(
            "POST",
            "Observation",
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "systolic blood pressure"},
                "valueQuantity": {"value": value, "unit": "mmHg"},
            },
        )
    await dashboard.fhir(
        "PUT",
        f"Patient/{family.lower()}-0",
        {
            "resourceType": "Patient",
            "id": f"{family.lower()}-0",
            "name": [{"family": family}],
            "gender": "female",
        },
    )
    await dashboard.fhir("DELETE", f"Patient/{family.lower()}-2")


async def test_signing_in_with_the_key_and_out_again(dashboard: Dashboard) -> None:
    page = await dashboard.tab()
    await page.goto("/dashboard/")
    key = page.get_by_label("API key")
    await expect(key).to_be_visible()
    await dashboard.shot(page, "login")
    await key.fill("fhb_not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("unknown API key")

    await page.get_by_label("API key").fill(dashboard.served.key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    await expect(page.get_by_label("project")).to_have_value("p1")
    signed_in = await page.context.storage_state()
    assert [c["name"] for c in signed_in["cookies"]] == [SESSION_COOKIE]

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API key")).to_be_visible()
    await page.goto("/dashboard/")
    await expect(page.get_by_label("API key")).to_be_visible()
    # The session is gone on the server too: a copy of the cookie no longer opens a page.
    copy = await dashboard.tab(signed_in)
    await copy.goto("/dashboard/")
    await expect(copy).to_have_url(re.compile(r"/dashboard/login\?"))
    await expect(copy.get_by_label("API key")).to_be_visible()


async def test_a_form_without_its_csrf_token_is_refused(dashboard: Dashboard) -> None:
    page = dashboard.page
    await page.evaluate(
        """() => document.querySelectorAll('form[action$="/logout"] input[name="csrf"]')
              .forEach((input) => input.remove())"""
    )
    async with page.expect_response(lambda r: r.url.endswith("/dashboard/logout")) as sent:
        await page.get_by_role("button", name="Sign out").click()
    assert (await sent.value).status == 403
    await expect(page.get_by_role("alert")).to_contain_text("CSRF")
    await page.goto("/dashboard/")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def test_a_script_without_the_csrf_header_changes_nothing(dashboard: Dashboard) -> None:
    page = dashboard.page
    statuses: dict[str, int] = await page.evaluate(
        """async () => {
             const post = (url, body, type) => fetch(url, {method: "POST", body,
               headers: {"Content-Type": type}}).then((r) => r.status);
             return {
               project: await post("/dashboard/project", "project=p2",
                                   "application/x-www-form-urlencoded"),
               patient: await post("/fhir/R4/Patient",
                                   JSON.stringify({resourceType: "Patient", id: "forged"}),
                                   "application/fhir+json"),
             };
           }"""
    )
    # A dashboard route refuses it; to the FHIR API, the cookie alone is no credential.
    assert statuses == {"project": 403, "patient": 401}
    await page.reload()
    await expect(page.get_by_label("project")).to_have_value("p1")
    found = await dashboard.fhir("GET", "Patient?_id=forged")
    assert found.get("total", 0) == 0
    # With the header (what the page's own scripts send), the same request goes through.
    sent: dict[str, Any] = await page.evaluate(
        """() => Fhirbots.send("POST", "/fhir/R4/Patient",
                               {resourceType: "Patient", name: [{family: "Scripted"}]},
                               "application/fhir+json")"""
    )
    assert sent["status"] == 201


@pytest.mark.parametrize("dashboard", [LOOPBACK], indirect=True)
async def test_the_overview_shows_figures_and_charts_after_writes(
    dashboard: Dashboard, receiver: Receiver
) -> None:
    await dashboard.fhir(
        "PUT",
        "Subscription/female-patients",
        {
            "resourceType": "Subscription",
            "id": "female-patients",
            "status": "active",
            "reason": "dashboard overview",
            "criteria": "Patient?gender=female",
            "channel": {
                "type": "rest-hook",
                "endpoint": f"{receiver.url}/hook",
                "payload": "application/fhir+json",
            },
        },
    )
    await _write_some(dashboard, "Overview")
    await receiver.wait_for("/hook", 1)
    changes = await dashboard.counted(
        "changes",
        {"Patient create": 3, "Patient update": 1, "Patient delete": 1, "Observation create": 2},
    )
    await dashboard.counted("deliveries", {"female-patients success": 1})
    page = dashboard.page
    await page.goto("/dashboard/")
    await expect(page.locator("#kpi-changes .n")).to_have_text(
        str(sum(changes.values())), timeout=WAIT_MS
    )
    await expect(page.locator("#kpi-notifications .n")).to_have_text("1")
    await expect(page.locator("#kpi-deliveries-failed .n")).to_have_text("0")
    for chart in ("changes", "notifications", "deliveries", "executions", "durations"):
        await expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
    for series in ("Patient create", "Patient update", "Patient delete", "Observation create"):
        await expect(page.locator("#chart-changes")).to_contain_text(series)
    await expect(page.locator("#chart-deliveries")).to_contain_text("success")
    await expect(page.locator("#chart-lag-events canvas")).to_have_count(1)
    await dashboard.shot(page, "overview")


async def test_another_project_sees_none_of_it(dashboard: Dashboard) -> None:
    await _write_some(dashboard, "Isolated")
    changes = await dashboard.counted("changes", {"Patient create": 3, "Observation create": 2})
    page = dashboard.page
    await page.goto("/dashboard/")
    await expect(page.locator("#kpi-changes .n")).to_have_text(
        str(sum(changes.values())), timeout=WAIT_MS
    )

    other = await dashboard.tab()
    await dashboard.sign_in(other, dashboard.served.other_key)
    await expect(other.get_by_label("project")).to_have_value("p2")
    await expect(other.locator("#kpi-changes .n")).to_have_text("0", timeout=WAIT_MS)
    await _shows_nothing_of(other, "/dashboard/", "Isolated", "isolated-")


async def _shows_nothing_of(page: Page, path: str, *markers: str) -> None:
    """``path`` has loaded (its figures are drawn) and names none of ``markers``."""
    await page.goto(path)
    await expect(page.locator("main")).to_be_visible()
    for marker in markers:
        await expect(page.locator("body")).not_to_contain_text(marker)
