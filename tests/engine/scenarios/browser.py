"""Scenario helpers of the dashboard's browser tests: Debian's Chromium, driven by Playwright,
on an engine served on a loopback port in the test's own event loop.

The browser is launched by path (``deploy/browser/setup.sh`` installs it): the test tool's own
browser download needs the internet, which CI machines may not have. Without Chromium these
tests skip, except in CI (``CI`` set), where they fail: the integration tier is never skipped
there.

With ``FHIRBOTS_SCREENSHOTS=1`` the tests that show a page save it to
``docs/images/dashboard-<view>.png`` (the pictures of the README and ``docs/dashboard.md``);
normal runs leave the checkout alone.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser as Chromium
from playwright.async_api import (
    BrowserContext,
    Page,
    StorageState,
    ViewportSize,
    async_playwright,
    expect,
)

from fhirbots.engine.runtime import Engine
from tests.conftest import REPO_ROOT
from tests.engine.scenarios.dashboard import Served, served_engine
from tests.waiting import eventually

__all__ = [
    "CHROMIUM_ENV",
    "SCREENSHOTS_ENV",
    "VIEWPORT",
    "WAIT_MS",
    "Dashboard",
    "chromium",
    "dashboard",
]

CHROMIUM_ENV = "FHIRBOTS_CHROMIUM"
"""The Chromium executable to drive, when not Debian's (the default path of its package)."""

DEFAULT_CHROMIUM = "/usr/bin/chromium"

LAUNCH_ARGS = (
    # Containers and CI runners are often root without user namespaces: no sandbox there.
    "--no-sandbox",
    "--disable-gpu",
    # No calls home: the machine may have no internet, and a test must not wait on one.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
"""The window size of every tab, and so of the screenshots in the docs."""

SCREENSHOTS_ENV = "FHIRBOTS_SCREENSHOTS"
"""Set to ``1`` to write the docs' screenshots while the tests run."""

SCREENSHOTS = REPO_ROOT / "docs" / "images"

WAIT_MS = 30_000
"""How long a visible-state wait may take before the test fails (milliseconds). Like
``tests/waiting.py``'s deadline it only bounds a failure: a passing test never comes near it.
The overview's figures lag the writes by a flush of the statistics stage."""


def chromium_path() -> str:
    """The Chromium to launch; skips the test without one (fails it in CI)."""
    path = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    if os.access(path, os.X_OK):
        return path
    message = f"no Chromium at {path}: run deploy/browser/setup.sh or set {CHROMIUM_ENV}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
async def chromium() -> AsyncIterator[Chromium]:
    """A headless Chromium, closed after the test. While it runs, every ``expect(...)`` waits
    up to :data:`WAIT_MS` unless it names its own deadline (Playwright's default of 5 s is a
    guess a loaded machine can miss: the first bot run starts the bot workers)."""
    path = chromium_path()
    expect.set_options(timeout=WAIT_MS)
    try:
        async with async_playwright() as playwright:
            launched = await playwright.chromium.launch(
                executable_path=path, args=list(LAUNCH_ARGS), headless=True
            )
            try:
                yield launched
            finally:
                await launched.close()
    finally:
        expect.set_options(timeout=None)


@dataclass
class Dashboard:
    """A served engine and a Chromium to look at its dashboard with.

    ``page`` is a tab signed in to project ``p1`` with an admin key; :meth:`tab` opens further
    tabs (other browsers: separate cookies).
    """

    served: Served
    chromium: Chromium
    page: Page = field(init=False)
    _contexts: list[BrowserContext] = field(default_factory=list)

    @property
    def engine(self) -> Engine:
        """The engine behind the dashboard."""
        return self.served.engine

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on the served engine."""
        return str(self.served.server.make_url(path))

    async def tab(self, state: StorageState | None = None) -> Page:
        """A fresh tab in a browser of its own, at the docs' window size: no cookies, or those
        of ``state`` (another tab's ``context.storage_state()``)."""
        context = await self.chromium.new_context(
            viewport=VIEWPORT, base_url=self.url("/"), storage_state=state
        )
        self._contexts.append(context)
        return await context.new_page()

    async def sign_in(self, page: Page, key: str) -> None:
        """Sign ``page`` in with ``key`` through the sign-in form; returns on the overview."""
        await page.goto("/dashboard/")
        await expect(page).to_have_url(self.url("/dashboard/login?next=%2Fdashboard%2F"))
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#sign-out")).to_be_visible()

    async def fhir(
        self, method: str, path: str, body: Any = None, *, key: str | None = None
    ) -> Any:
        """Call the FHIR API as a script would (Bearer key, ``p1``'s unless ``key``); returns
        the response's JSON (None when empty) and fails on an error status."""
        headers = {
            "Authorization": f"Bearer {key or self.served.key}",
            "Accept": "application/fhir+json",
        }
        if body is not None:
            headers["Content-Type"] = "application/fhir+json"
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url(f"/fhir/R4/{path}"), json=body, headers=headers) as r,
        ):
            text = await r.text()
            assert r.status < 400, f"{method} {path}: {r.status} {text[:500]}"
            return await r.json(content_type=None) if text else None

    async def api(self, path: str, *, key: str | None = None) -> Any:
        """GET a dashboard JSON endpoint as a script would (Bearer key, ``p1``'s unless
        ``key``); fails on any status but 200."""
        status, body = await self.api_answer(path, key=key)
        assert status == 200, f"{path}: {status} {body}"
        return body

    async def api_answer(self, path: str, *, key: str | None = None) -> tuple[int, Any]:
        """The status and JSON body of a GET of a dashboard JSON endpoint (see :meth:`api`)."""
        headers = {"Authorization": f"Bearer {key or self.served.key}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.url(f"/dashboard/api/{path}"), headers=headers) as response,
        ):
            return response.status, await response.json()

    async def flush_stats(self) -> None:
        """Make the statistics stage write every window it holds (as if a minute had passed),
        so that the overview shows what it has counted so far."""
        stage = self.engine.stats
        assert stage is not None
        await stage.tick(None, now=datetime.now(UTC) + timedelta(minutes=1))

    async def counted(self, metric: str, at_least: dict[str, int]) -> dict[str, int]:
        """Wait until the overview's figures of ``metric`` (``/api/stats`` totals of the last
        hour, by their dimensions joined with spaces) reach ``at_least``; returns them all."""

        async def reached() -> dict[str, int] | None:
            await self.flush_stats()
            stats = await self.api("stats")
            totals = {" ".join(t["dims"]): t["count"] for t in stats["metrics"][metric]["totals"]}
            enough = all(totals.get(name, 0) >= n for name, n in at_least.items())
            return totals if enough else None

        return await eventually(reached, f"{metric} counted: {at_least}")

    async def shot(self, page: Page, view: str) -> None:
        """Save ``page`` as the docs' picture of ``view``, when :data:`SCREENSHOTS_ENV` asks."""
        if os.environ.get(SCREENSHOTS_ENV) != "1":
            return
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOTS / f"dashboard-{view}.png", animations="disabled")

    async def close(self) -> None:
        """Close every tab (their live connections end before the server stops)."""
        for context in self._contexts:
            await context.close()
        self._contexts.clear()


@pytest.fixture
async def dashboard(
    tmp_path: Path, chromium: Chromium, dashboard_settings: dict[str, Any]
) -> AsyncIterator[Dashboard]:
    """An engine on the SQLite datastore served on a loopback port, and a Chromium tab signed
    in to project ``p1``. Further engine settings come from ``dashboard_settings`` (see
    ``tests/engine/scenarios/dashboard.py``), as for the ``browser`` fixture."""
    async with served_engine("sqlite", tmp_path, **dashboard_settings) as served:
        opened = Dashboard(served, chromium)
        try:
            opened.page = await opened.tab()
            await opened.sign_in(opened.page, served.key)
            yield opened
        finally:
            await opened.close()
