"""The dashboard in a real browser: what a person sees and clicks, waited for on the page.

Each test waits for visible state with Playwright's auto-waiting assertions (or, for a page
that does not refresh itself, by reloading it until the state shows), never for a guessed
time. With ``FHIRBOTS_SCREENSHOTS=1`` the tests save the docs' pictures of the pages they show
(see ``tests/engine/scenarios/browser.py``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Dialog, Locator, Page, expect

from fhirbots.engine.dashboard.sessions import SESSION_COOKIE
from tests.engine.scenarios.browser import Dashboard
from tests.engine.scenarios.delivery import Receiver
from tests.waiting import eventually

pytestmark = pytest.mark.integration

LOOPBACK = {"allowed_endpoint_networks": ("127.0.0.0/8",)}
"""Engine settings that let Subscriptions deliver to a receiver on this machine."""

FLAGGER = """\
from fhirbots import logger

def handler(fhir, event):
    observation = event.input
    logger.info("flagging %s", observation["subject"]["reference"])
    flag = fhir.create({"resourceType": "Flag", "status": "active",
                        "subject": observation["subject"],
                        "code": {"text": "high blood pressure"}})
    return {"flag": flag["id"]}
"""
"""A bot that flags the subject of each Observation it is given."""


# -- scenario ---------------------------------------------------------------------------------


async def _flagger(dashboard: Dashboard) -> None:
    """Bot ``flagger`` of project ``p1`` and the Subscription that runs it on every final
    Observation."""
    await dashboard.fhir(
        "PUT",
        "Bot/flagger",
        {
            "resourceType": "Bot",
            "id": "flagger",
            "name": "flagger",
            "status": "active",
            "code": FLAGGER,
        },
    )
    await dashboard.fhir(
        "PUT",
        "Subscription/flag-observations",
        {
            "resourceType": "Subscription",
            "id": "flag-observations",
            "status": "active",
            "reason": "flag the subject of each observation",
            "criteria": "Observation?status=final",
            "channel": {"type": "rest-hook", "endpoint": "Bot/flagger"},
        },
    )


def _observation(patient: str, value: int = 150) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": f"Patient/{patient}"},
        "code": {"text": "systolic blood pressure"},
        "valueQuantity": {"value": value, "unit": "mmHg"},
    }


def _patient(patient_id: str, family: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "name": [{"family": family}], **fields}


async def _write_some(dashboard: Dashboard, family: str) -> str:
    """Writes of project ``p1``: three Patients (one updated, one deleted) and two
    Observations of the first; returns the first Patient's id."""
    ids = [f"{family.lower()}-{n}" for n in range(3)]
    for patient in ids:
        await dashboard.fhir("PUT", f"Patient/{patient}", _patient(patient, family))
    for value in (120, 135):
        await dashboard.fhir("POST", "Observation", _observation(ids[0], value))
    await dashboard.fhir("PUT", f"Patient/{ids[0]}", _patient(ids[0], family, gender="female"))
    await dashboard.fhir("DELETE", f"Patient/{ids[2]}")
    return ids[0]


async def _reload_until(page: Page, shown: Locator, what: str) -> None:
    """Reload ``page`` until ``shown`` is on it: for a page that shows a state as it was when
    loaded and does not refresh itself."""

    async def on_page() -> bool:
        await page.reload()
        return await shown.count() > 0

    await eventually(on_page, what)


async def _shows(page: Page, path: str, *markers: str) -> None:
    """``path`` opens and names each of ``markers``."""
    response = await page.goto(path)
    assert response is not None and response.status == 200, path
    for marker in markers:
        await expect(page.locator("main")).to_contain_text(marker)


async def _shows_nothing_of(page: Page, path: str, *markers: str) -> None:
    """``path`` opens and names none of ``markers``."""
    response = await page.goto(path)
    assert response is not None and response.status == 200, path
    await expect(page.locator("main h1")).to_be_visible()
    for marker in markers:
        await expect(page.locator("body")).not_to_contain_text(marker)


async def _not_found(page: Page, path: str) -> None:
    """``path`` answers 404 with the dashboard's error page."""
    response = await page.goto(path)
    assert response is not None and response.status == 404, path
    await expect(page.get_by_role("heading", name="404")).to_be_visible()


# -- signing in, sessions, CSRF ---------------------------------------------------------------


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


# -- overview ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dashboard_settings", [LOOPBACK])
async def test_the_overview_shows_figures_and_charts_after_writes(
    dashboard: Dashboard, receiver: Receiver
) -> None:
    await _flagger(dashboard)
    await dashboard.fhir(
        "PUT",
        "Subscription/female-patients",
        {
            "resourceType": "Subscription",
            "id": "female-patients",
            "status": "active",
            "reason": "tell the ward about female patients",
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
    # Every write of the project, AuditEvents included (the sign-in and each bot run).
    written = {
        "Bot create": 1,
        "Subscription create": 2,
        "Patient create": 3,
        "Patient update": 1,
        "Patient delete": 1,
        "Observation create": 2,
        "Flag create": 2,
        "AuditEvent create": 3,
    }
    await dashboard.counted("changes", written)
    notifications = await dashboard.counted(
        "notifications", {"female-patients": 1, "flag-observations": 2}
    )
    await dashboard.counted(
        "deliveries", {"female-patients success": 1, "flag-observations success": 2}
    )
    await dashboard.counted("executions", {"Bot/flagger success": 2})

    async def lag_sampled() -> bool:
        return bool((await dashboard.api("stats"))["lag"])

    await eventually(lag_sampled, "a sample of the consumer lag")

    page = dashboard.page
    await page.goto("/dashboard/")
    await expect(page.locator("#kpi-changes .n")).to_have_text(str(sum(written.values())))
    await expect(page.locator("#kpi-notifications .n")).to_have_text(
        str(sum(notifications.values()))
    )
    await expect(page.locator("#kpi-deliveries-failed .n")).to_have_text("0")
    await expect(page.locator("#kpi-executions .n")).to_have_text("2")
    await expect(page.locator("#kpi-errors .n")).to_have_text("0.0%")
    for chart in ("changes", "notifications", "deliveries", "executions", "durations"):
        await expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
    for series in ("Patient create", "Patient delete", "Observation create", "Flag create"):
        await expect(page.locator("#chart-changes")).to_contain_text(series)
    await expect(page.locator("#chart-deliveries")).to_contain_text("success")
    await expect(page.locator("#chart-executions")).to_contain_text("success")
    await expect(page.locator("#chart-durations")).to_contain_text("p99")
    for chart in ("lag-events", "lag-seconds"):
        await expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
        await expect(page.locator(f"#chart-{chart}")).to_contain_text("fhirbots-matcher")
    await dashboard.shot(page, "overview")


# -- live tail, event browser, trace ----------------------------------------------------------


async def test_a_write_shows_up_in_the_live_tail(dashboard: Dashboard) -> None:
    await _flagger(dashboard)
    page = dashboard.page
    await page.goto("/dashboard/tail")
    await expect(page.locator("#tail-status")).to_have_text("live · project p1")
    await dashboard.fhir("PUT", "Patient/tailed", _patient("tailed", "Tailed"))
    row = page.locator("#tail-rows tr", has_text="Patient/tailed")
    # The promise: a write is on screen within 2 seconds.
    await expect(row).to_be_visible(timeout=2000)
    await expect(row).to_contain_text("change")
    await expect(row).to_contain_text("create v1")

    # What follows a write shows up too: the bot's notification, delivery, run and write.
    await dashboard.fhir("POST", "Observation", _observation("tailed"))
    rows = page.locator("#tail-rows tr")
    await expect(rows.filter(has_text="Subscription/flag-observations")).to_have_count(2)
    await expect(rows.filter(has_text="Bot/flagger").filter(has_text="execution")).to_have_count(1)
    await expect(rows.filter(has_text="Flag/")).to_have_count(1)
    await dashboard.shot(page, "tail")


async def test_the_trace_of_a_bot_write_shows_its_chain(dashboard: Dashboard) -> None:
    await _flagger(dashboard)
    await dashboard.fhir("PUT", "Patient/traced", _patient("traced", "Traced"))
    await dashboard.fhir("POST", "Observation", _observation("traced"))

    async def flag_change() -> str | None:
        found = await dashboard.api("events?topic=fhir.changes.v1&key=Flag/")
        return found["items"][0]["ref"] if found["items"] else None

    flag = await eventually(flag_change, "the bot's Flag in the change log")

    async def chain_indexed() -> bool:
        status, trace = await dashboard.api_answer(f"trace/{flag}")
        return status == 200 and trace["steps"] >= 5

    await eventually(chain_indexed, "the steps of the chain in the trace index")

    page = dashboard.page
    await page.goto("/dashboard/events")
    rows = page.locator("#events tbody tr")
    for key in ("Patient/traced", "Observation/", "Flag/", "Bot/flagger"):
        await expect(rows.filter(has_text=key).first).to_be_visible()
    await dashboard.shot(page, "events")
    await page.get_by_label("key contains").fill("Flag/")
    await page.get_by_role("button", name="Search").click()
    await expect(rows).to_have_count(1)
    await rows.get_by_role("link", name="trace").click()

    await expect(page.get_by_role("heading", name=re.compile("^Trace"))).to_be_visible()
    # The Observation's change caused the notification, which ran the bot, which wrote the Flag.
    root = page.locator("#trace > li.step[data-kind=change]")
    await expect(root).to_have_count(1)
    await expect(root.locator("> strong + span.mono")).to_have_text(re.compile("^Observation/"))
    execution = root.locator(
        "> ul > li.step[data-kind=notification] > ul > li.step[data-kind=execution]"
    )
    await expect(execution).to_contain_text("Bot/flagger")
    written = execution.locator("> ul > li.step[data-kind=change]", has_text="Flag/")
    await expect(written).to_have_count(1)
    await expect(written).to_have_class(re.compile(r"\bfocus\b"))
    await execution.locator("> details", has_text="logs").locator("summary").click()
    await expect(execution.locator("> details pre").filter(has_text="flagging")).to_have_text(
        re.compile("flagging Patient/traced")
    )
    await dashboard.shot(page, "trace")


# -- subscriptions ----------------------------------------------------------------------------


@pytest.mark.parametrize("dashboard_settings", [{**LOOPBACK, "delivery_max_attempts": 1}])
async def test_a_dead_letter_is_retried_from_the_subscription_page_and_delivered(
    dashboard: Dashboard, receiver: Receiver
) -> None:
    async def down_then_up(_: web.Request, count: int) -> web.Response:
        return web.Response(status=503 if count == 1 else 200)

    receiver.on("/flaky", down_then_up)
    await dashboard.fhir(
        "PUT",
        "Subscription/flaky-hook",
        {
            "resourceType": "Subscription",
            "id": "flaky-hook",
            "status": "active",
            "reason": "a receiver that is down at first",
            "criteria": "Patient?gender=female",
            "channel": {
                "type": "rest-hook",
                "endpoint": f"{receiver.url}/flaky",
                "payload": "application/fhir+json",
            },
        },
    )
    await dashboard.fhir(
        "PUT", "Patient/undelivered", _patient("undelivered", "Undelivered", gender="female")
    )
    await receiver.wait_for("/flaky", 1)
    await dashboard.counted("notifications", {"flaky-hook": 1})

    page = dashboard.page
    await page.goto("/dashboard/subscriptions/flaky-hook")
    dead = page.locator("tr.dead-letter", has_text="Patient/undelivered")
    await _reload_until(page, dead, "the dead letter on the subscription page")
    await expect(dead).to_contain_text("503")
    await expect(page.locator("#matched-1h")).to_have_text("1")
    await dashboard.shot(page, "subscription")

    questions: list[str] = []

    async def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        await dialog.accept()

    page.once("dialog", accept)
    await dead.get_by_role("button", name="Retry").click()
    await expect(page.locator("#notice")).to_have_text(
        "1 dead letter(s) queued for delivery again."
    )
    assert questions == ["Deliver event 1 again?"]
    await receiver.wait_for("/flaky", 2)
    delivered = page.locator("#events tr.event", has_text="Patient/undelivered")
    await _reload_until(
        page, delivered.filter(has_text="delivered"), "the event delivered, on the page"
    )
    await expect(page.locator("#no-dead-letters")).to_be_visible()

    await page.locator("header nav").get_by_role("link", name="Subscriptions").click()
    row = page.locator("#sub-flaky-hook")
    await expect(row.locator(".matched-1h")).to_have_text("1")
    await expect(row.locator(".dead-letters")).to_have_text("0")
    await expect(row.locator(".last-event")).to_contain_text("delivered")
    await dashboard.shot(page, "subscriptions")


# -- bots and executions ----------------------------------------------------------------------


GREETER = """\
from fhirbots import logger

def handler(fhir, event):
    logger.info("hello")
    return {"greeted": None}
"""

BROKEN = """\
from fhirbots import logger

def handler(fhir, event):
    name = event.input["name"][0]["family"]
    logger.info("hello %s", name.__class__)
    return {"greeted": name}
"""
"""Line 5 reaches for an attribute starting with ``_``: the sandbox's compiler refuses it."""

FIXED = BROKEN.replace("name.__class__", "name")


async def _type_code(page: Page, code: str) -> None:
    """Replace the editor's text with ``code``, as if pasted (typing it key by key would add
    the editor's own indentation and closing brackets)."""
    await page.locator("#bot-editor .cm-content").click()
    await page.keyboard.press("Control+A")
    await page.keyboard.insert_text(code)


async def test_a_bot_written_in_the_editor_shows_its_error_then_runs(
    dashboard: Dashboard,
) -> None:
    await dashboard.fhir(
        "PUT",
        "Bot/greeter",
        {
            "resourceType": "Bot",
            "id": "greeter",
            "name": "greeter",
            "status": "active",
            "code": GREETER,
        },
    )
    page = dashboard.page
    await page.goto("/dashboard/bots")
    await page.locator("#bots").get_by_role("link", name="greeter").click()
    await expect(page.get_by_role("heading", name="greeter")).to_be_visible()
    editor = page.locator("#bot-editor")
    await expect(editor.locator(".cm-content")).to_contain_text('logger.info("hello")')

    await _type_code(page, BROKEN)
    await page.locator("#bot-save").click()
    await expect(page.locator("#bot-save-status")).to_have_text("not saved: 1 problem")
    # The problem is marked on line 5, in its text and in the gutter beside it, and only there.
    line = editor.locator(".cm-line").nth(4)
    await expect(line).to_contain_text("name.__class__")
    await expect(line.locator(".cm-lintRange-error")).to_have_count(1)
    await expect(editor.locator(".cm-lintRange-error")).to_have_count(1)
    marker = editor.locator(".cm-gutter-lint .cm-lint-marker-error")
    await expect(marker).to_have_count(1)
    marker_box, line_box = await marker.bounding_box(), await line.bounding_box()
    assert marker_box is not None and line_box is not None
    middle = marker_box["y"] + marker_box["height"] / 2
    assert line_box["y"] <= middle <= line_box["y"] + line_box["height"]
    await marker.hover()
    await expect(page.locator(".cm-tooltip-lint")).to_contain_text("__class__")
    await expect(page.locator("#bot-problems li")).to_have_text(re.compile(r"^line 5, .*__class__"))
    await expect(page.locator("#bot-version")).to_have_text("1")

    await _type_code(page, FIXED)
    await page.locator("#bot-save").click()
    await expect(page.locator("#bot-save-status")).to_have_text("deployed as version 2")
    await expect(editor.locator(".cm-lintRange-error")).to_have_count(0)
    await expect(page.locator("#bot-problems li")).to_have_count(0)

    await page.get_by_label("content type").select_option("application/fhir+json")
    await page.get_by_label("input", exact=True).fill(
        '{"resourceType": "Patient", "name": [{"family": "Chalmers"}]}'
    )
    await page.get_by_role("button", name="Run with this input").click()
    await expect(page.locator("#run-status")).to_have_text("ok")
    await expect(page.locator("#run-status")).to_have_class("pill success")
    await expect(page.locator("#run-logs")).to_have_text("INFO hello Chalmers")
    await expect(page.locator("#run-output")).to_contain_text('"greeted": "Chalmers"')
    await dashboard.shot(page, "bot")
    # An input the bot does not expect: its error is shown, and counted.
    await page.get_by_label("input", exact=True).fill('{"resourceType": "Patient"}')
    await page.get_by_role("button", name="Run with this input").click()
    await expect(page.locator("#run-status")).to_have_text("error")
    await expect(page.locator("#run-error")).to_contain_text("KeyError")

    await dashboard.counted("executions", {"Bot/greeter success": 1, "Bot/greeter error": 1})
    await page.get_by_role("link", name="all bots").click()
    row = page.locator("#bots tr[data-bot=greeter]")
    await expect(row).to_contain_text("v2")
    hour = row.locator("td.num")
    await expect(hour.nth(1)).to_have_text("2")  # runs in the last hour
    await expect(hour.nth(2)).to_have_text("50.0%")  # their error rate
    await expect(row.locator(".pill.error")).to_be_visible()  # the last run
    await dashboard.shot(page, "bots")

    await page.get_by_role("link", name="all executions").click()
    runs = page.locator("#executions tr[data-execution]", has_text="Bot/greeter")
    await _reload_until(page, runs.nth(1), "both runs in the executions list")
    await expect(runs.filter(has_text="ok")).to_have_count(1)
    await expect(runs.filter(has_text="KeyError")).to_have_count(1)
    await dashboard.shot(page, "executions")
    await runs.filter(has_text="ok").get_by_role("link").first.click()
    await expect(page.locator("#execution-output")).to_contain_text("Chalmers")


# -- project scope ----------------------------------------------------------------------------


async def test_another_project_sees_none_of_it(dashboard: Dashboard) -> None:
    await _flagger(dashboard)
    mine = dashboard.page
    other = await dashboard.tab()
    await dashboard.sign_in(other, dashboard.served.other_key)
    await expect(other.get_by_label("project")).to_have_value("p2")
    for page, project in ((mine, "p1"), (other, "p2")):
        await page.goto("/dashboard/tail")
        await expect(page.locator("#tail-status")).to_have_text(f"live · project {project}")

    patient = await _write_some(dashboard, "Isolated")
    # p1's tail shows the writes and the bot's runs: they have gone by p2's tail too.
    await expect(mine.locator("#tail-rows tr", has_text="Flag/")).to_have_count(2)
    await expect(other.locator("#tail-rows tr")).to_have_count(0)
    await expect(other.locator("#tail-count")).to_have_text("0")

    await dashboard.counted("changes", {"Patient create": 3, "Flag create": 2})
    await dashboard.counted("executions", {"Bot/flagger success": 2})
    executions = (await dashboard.api("executions"))["executions"]
    assert executions
    run = executions[0]["id"]
    found = await dashboard.api(f"events?topic=fhir.changes.v1&key=Patient/{patient}")
    step = found["items"][0]["ref"]

    await mine.goto("/dashboard/")
    await expect(mine.locator("#kpi-changes .n")).to_have_text(re.compile(r"^[1-9][0-9]+$"))
    await other.goto("/dashboard/")
    await expect(other.locator("#kpi-changes .n")).to_have_text(re.compile(r"^[0-9]$"))
    await expect(other.locator("#kpi-executions .n")).to_have_text("0")

    lists = {
        "/dashboard/events": (f"Patient/{patient}", "Flag/"),
        "/dashboard/events?topic=bots.executions.v1": ("Bot/flagger",),
        "/dashboard/subscriptions": ("flag-observations",),
        "/dashboard/bots": ("flagger",),
        "/dashboard/executions": ("Bot/flagger",),
    }
    for path, markers in lists.items():
        await _shows(mine, path, *markers)
        await _shows_nothing_of(other, path, *markers, "isolated-")
    for path in (
        "/dashboard/subscriptions/flag-observations",
        "/dashboard/bots/flagger",
        f"/dashboard/executions/{run}",
        f"/dashboard/trace/{step}",
    ):
        await _shows(mine, path)
        await _not_found(other, path)
