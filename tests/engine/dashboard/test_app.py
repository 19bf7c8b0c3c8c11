"""The dashboard's gate: sign-in, sessions, CSRF, project scope, audit, the overview's API."""

from __future__ import annotations

from typing import Any

from yarl import URL

from fhirbots.engine.dashboard.sessions import SESSION_COOKIE
from tests.engine.scenarios.dashboard import Browser, new_client, sign_in
from tests.waiting import eventually


async def test_root_and_pages_send_a_stranger_to_sign_in(browser: Browser) -> None:
    stranger = await new_client(browser.client.server)
    try:
        root = await stranger.get("/", allow_redirects=False)
        assert root.status == 302 and root.headers["Location"] == "/dashboard/"
        page = await stranger.get("/dashboard/subscriptions?x=1", allow_redirects=False)
        assert page.status == 303
        target = URL(page.headers["Location"])
        assert target.path == "/dashboard/login"
        assert target.query["next"] == "/dashboard/subscriptions?x=1"
        api = await stranger.get("/dashboard/api/stats")
        assert api.status == 401 and "error" in await api.json()
        form = await stranger.get("/dashboard/login")
        assert form.status == 200 and 'name="key"' in await form.text()
    finally:
        await stranger.close()


async def test_a_wrong_key_is_refused_with_the_form_again(browser: Browser) -> None:
    response = await browser.client.post(
        "/dashboard/login", data={"key": "fhb_nope", "next": "/dashboard/"}
    )
    assert response.status == 401
    assert "unknown API key" in await response.text()


async def test_the_session_cookie_is_locked_down(browser: Browser) -> None:
    fresh = await new_client(browser.client.server)
    try:
        response = await fresh.post(
            "/dashboard/login",
            data={"key": browser.key, "next": "https://evil.example/steal"},
            allow_redirects=False,
        )
        assert response.status == 303
        assert response.headers["Location"] == "/dashboard/"  # no open redirect
        cookie = response.headers["Set-Cookie"]
        assert f"{SESSION_COOKIE}=" in cookie
        for attribute in ("HttpOnly", "SameSite=Strict", "Max-Age=", "Path=/"):
            assert attribute in cookie
        assert "Secure" not in cookie  # plain http here; https sets it
    finally:
        await fresh.close()


async def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(browser: Browser) -> None:
    token = browser.client.session.cookie_jar.filter_cookies(browser.client.make_url("/"))[
        SESSION_COOKIE
    ].value
    response = await browser.post("/dashboard/logout")
    assert response.status == 303 and response.headers["Location"] == "/dashboard/login"
    replay = await new_client(browser.client.server, cookies={SESSION_COOKIE: token})
    try:
        again = await replay.get("/dashboard/", allow_redirects=False)
        assert again.status == 303  # to the sign-in form
    finally:
        await replay.close()


async def test_state_changes_without_the_csrf_token_are_refused(browser: Browser) -> None:
    no_token = await browser.client.post(
        "/dashboard/logout", data={"csrf": "forged"}, allow_redirects=False
    )
    assert no_token.status == 403
    assert "CSRF" in await no_token.text()
    still_in = await browser.client.get("/dashboard/", allow_redirects=False)
    assert still_in.status == 200
    # The FHIR API with the cookie alone: as good as no credentials at all.
    bare = await browser.client.post(
        "/fhir/R4/Patient",
        json={"resourceType": "Patient"},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert bare.status == 401


async def test_pages_call_the_fhir_api_with_session_and_token_and_are_audited(
    browser: Browser,
) -> None:
    created = await browser.fhir(
        "POST",
        "/fhir/R4/Patient",
        json={"resourceType": "Patient", "name": [{"family": "Chalmers"}]},
        headers={"Content-Type": "application/fhir+json"},
    )
    assert created.status == 201
    body: dict[str, Any] = await created.json()
    history = await browser.engine.fhir.history("p1", "AuditEvent", count=100)
    descriptions = [e.content.get("outcomeDesc", "") for e in history.entries if e.content]
    assert any(d.startswith("POST /fhir/R4/Patient answered 201") for d in descriptions)
    assert any(d == "signed in" for d in descriptions)
    agents = [e.content["agent"][0]["who"]["reference"] for e in history.entries if e.content]
    assert all(a.startswith("ApiKey/") for a in agents)
    read = await browser.fhir("GET", f"/fhir/R4/Patient/{body['id']}")
    assert read.status == 200


async def test_another_projects_key_sees_only_its_project(browser: Browser) -> None:
    await browser.fhir(
        "POST",
        "/fhir/R4/Patient",
        json={"resourceType": "Patient", "id": "mine"},
        headers={"Content-Type": "application/fhir+json"},
    )
    other = await new_client(browser.client.server)
    try:
        csrf = await sign_in(other, browser.other_key)
        page = await (await other.get("/dashboard/")).text()
        assert "p2" in page
        stats = await (await other.get("/dashboard/api/stats")).json()
        assert stats["project"] == "p2"
        search = await other.get("/fhir/R4/Patient", headers={"X-CSRF-Token": csrf})
        assert (await search.json()).get("total", 0) == 0
    finally:
        await other.close()


async def test_an_admin_switches_projects_and_it_is_audited(browser: Browser) -> None:
    response = await browser.post("/dashboard/project", {"project": "p2"})
    assert response.status == 303
    stats = await browser.api("/dashboard/api/stats")
    assert stats["project"] == "p2"
    page = await browser.page("/dashboard/")
    assert 'value="p2"' in page


async def test_scripts_use_the_json_api_with_a_key(browser: Browser) -> None:
    script = await new_client(browser.client.server)
    try:
        stats = await script.get(
            "/dashboard/api/stats",
            params={"range": "24h"},
            headers={"Authorization": f"Bearer {browser.key}"},
        )
        body = await stats.json()
        assert stats.status == 200 and body["range"] == "24h" and body["step_seconds"] == 300
        bad = await script.get(
            "/dashboard/api/stats",
            params={"range": "1y"},
            headers={"Authorization": f"Bearer {browser.key}"},
        )
        assert bad.status == 400 and "range" in (await bad.json())["error"]
    finally:
        await script.close()


async def test_writes_show_up_in_the_overview_figures(browser: Browser) -> None:
    for _ in range(3):
        await browser.fhir(
            "POST",
            "/fhir/R4/Observation",
            json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
            headers={"Content-Type": "application/fhir+json"},
        )
    stage = browser.engine.stats
    assert stage is not None

    async def counted() -> int:
        await stage.tick(None, now=_far_future())
        stats = await browser.api("/dashboard/api/stats")
        totals = stats["metrics"]["changes"]["totals"]
        return sum(t["count"] for t in totals if t["dims"] == ["Observation", "create"])

    assert await eventually(lambda: _at_least(counted, 3), "three Observation creates counted")
    assert "lag" in await browser.api("/dashboard/api/stats")  # admin keys see consumer lag


async def _at_least(count: Any, n: int) -> bool:
    return bool(await count() >= n)


def _far_future() -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(minutes=1)
