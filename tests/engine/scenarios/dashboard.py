"""Scenario helpers of the dashboard tests: a served engine, a browser-like client signed in
with a key of project ``p1`` (cookie and CSRF token), and a second project ``p2``; what the
tests of several views write and read through it (resources, Subscriptions, AuditEvents, the
event browser's searches)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from fhirbots.engine.dashboard.sessions import CSRF_HEADER
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from tests.conftest import POSTGRES
from tests.engine.conftest import open_storage
from tests.engine.scenarios.delivery import Receiver
from tests.waiting import eventually

__all__ = [
    "HEART_RATE",
    "LOOPBACK",
    "Browser",
    "Client",
    "Served",
    "audit_events",
    "browser",
    "create_patient",
    "create_subscription",
    "dashboard_settings",
    "found_events",
    "hook_url",
    "key_author",
    "new_client",
    "served_engine",
    "sign_in",
    "subscription_json",
    "subscription_status",
]

Client = TestClient[web.Request, web.Application]
"""A test client of the engine's HTTP application."""

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')

_FHIR_JSON = {"Content-Type": "application/fhir+json"}

LOOPBACK: dict[str, Any] = {"allowed_endpoint_networks": ("127.0.0.0/8",)}
"""Settings for a test whose receiver listens on 127.0.0.1, which delivery refuses unless
allowed (parametrise ``dashboard_settings`` with it)."""

HEART_RATE = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
}
"""An Observation to search for by a field of its code."""


@dataclass
class Browser:
    """An HTTP client that behaves like a signed-in browser tab of the dashboard."""

    client: Client
    engine: Engine
    key: str
    """The API key it signed in with (project ``p1``, admin)."""
    other_key: str
    """An admin key of project ``p2``, for isolation tests."""
    csrf: str = ""

    async def page(self, path: str) -> str:
        """GET a dashboard page (expects 200) and return its HTML."""
        response = await self.client.get(path)
        text = await response.text()
        assert response.status == 200, f"{path}: {response.status} {text[:500]}"
        return text

    async def api(self, path: str, **params: str) -> Any:
        """GET a dashboard JSON endpoint (expects 200)."""
        response = await self.client.get(path, params=params)
        body = await response.json()
        assert response.status == 200, f"{path}: {response.status} {body}"
        return body

    async def post(self, path: str, data: dict[str, str] | None = None) -> ClientResponse:
        """POST a form with the session's CSRF token (redirects are not followed)."""
        form = {"csrf": self.csrf, **(data or {})}
        return await self.client.post(path, data=form, allow_redirects=False)

    async def fhir(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        """Call the FHIR API the way a dashboard page does: session cookie and CSRF header."""
        headers = {CSRF_HEADER: self.csrf, **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Create ``resource`` through the FHIR API as a page does (expects 201)."""
        response = await self.fhir(
            "POST", f"/fhir/R4/{resource['resourceType']}", json=resource, headers=_FHIR_JSON
        )
        assert response.status == 201, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def create_subscription(browser: Browser, endpoint: str, **extra: Any) -> str:
    """A rest-hook Subscription of project ``p1`` on female Patients; its id."""
    resource = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "test",
        "criteria": "Patient?gender=female",
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"},
        **extra,
    }
    return str((await browser.create(resource))["id"])


async def create_patient(browser: Browser, gender: str = "female") -> str:
    """A Patient of project ``p1``; its id."""
    return str((await browser.create({"resourceType": "Patient", "gender": gender}))["id"])


async def subscription_status(browser: Browser, subscription_id: str) -> str:
    """The stored ``status`` of a Subscription of project ``p1``."""
    stored = await browser.engine.fhir.read("p1", "Subscription", subscription_id)
    assert stored.content is not None
    return str(stored.content["status"])


async def subscription_json(browser: Browser, subscription_id: str) -> dict[str, Any]:
    """``GET /dashboard/api/subscriptions/{id}``."""
    body: dict[str, Any] = await browser.api(f"/dashboard/api/subscriptions/{subscription_id}")
    return body


def hook_url(receiver: Receiver) -> str:
    """The receiver's ``/hook`` endpoint."""
    return f"{receiver.url}/hook"


async def audit_events(browser: Browser, subtype: str) -> list[dict[str, Any]]:
    """Project ``p1``'s AuditEvents of dashboard actions of ``subtype``."""
    history = await browser.engine.fhir.history("p1", "AuditEvent", count=1000)
    return [
        e.content
        for e in history.entries
        if e.content and (e.content.get("subtype") or [{}])[0].get("code") == subtype
    ]


async def key_author(browser: Browser) -> str:
    """The author reference of the key the browser signed in with."""
    return (await browser.engine.authenticator.authenticate(f"Bearer {browser.key}")).author


async def found_events(browser: Browser, what: str, **params: str) -> list[dict[str, Any]]:
    """Wait until an event browser search finds something (the relay publishes a moment after
    the write); its items."""

    async def search() -> list[dict[str, Any]]:
        page = await browser.api("/dashboard/api/events", **params)
        items: list[dict[str, Any]] = page["items"]
        return items

    return await eventually(search, what)


async def new_client(server: Any, **kwargs: Any) -> Client:
    """Another client (another browser) on the same server; close it after use."""
    client: Client = TestClient(server, **kwargs)
    await client.start_server()
    return client


async def sign_in(client: Client, key: str) -> str:
    """Sign ``client`` in with ``key``; returns the session's CSRF token."""
    response = await client.post(
        "/dashboard/login", data={"key": key, "next": "/dashboard/"}, allow_redirects=False
    )
    assert response.status == 303, await response.text()
    page = await (await client.get("/dashboard/")).text()
    found = _CSRF.search(page)
    assert found is not None, "no CSRF token on the overview page"
    return found.group(1)


@dataclass
class Served:
    """An engine served over HTTP on 127.0.0.1, with projects ``p1`` and ``p2``."""

    engine: Engine
    server: TestServer
    key: str
    """An admin key of project ``p1``."""
    other_key: str
    """An admin key of project ``p2``."""


@contextlib.asynccontextmanager
async def served_engine(storage: str, data_dir: Path, **settings: Any) -> AsyncIterator[Served]:
    """An engine (relay, matcher, dispatcher, statistics) served on a free loopback port while
    the context lasts.

    Args:
        storage: The datastore adapter (``"sqlite"`` or ``"postgres"``).
        data_dir: The engine's data dir.
        **settings: Further :class:`Settings` fields (e.g. ``allowed_endpoint_networks``).
    """
    engine = Engine(
        Settings(data_dir=data_dir, **settings), storage=await open_storage(storage, data_dir)
    )
    try:
        key = await engine.create_project("p1", "Project one")
        other = await engine.create_project("p2", "Project two")
        await engine.start_relay()
        await engine.start_matcher()
        await engine.start_dispatcher()
        await engine.start_stats()
        server = TestServer(engine.app())
        await server.start_server()
        try:
            yield Served(engine, server, key, other)
        finally:
            await server.close()
    finally:
        await engine.close()


@pytest.fixture
def dashboard_settings() -> dict[str, Any]:
    """Further :class:`Settings` fields of the `browser` fixture's engine: none. A test that
    needs others parametrises this fixture by name, e.g.
    ``@pytest.mark.parametrize("dashboard_settings", [{"delivery_max_attempts": 1}])``."""
    return {}


@pytest.fixture(params=["sqlite", POSTGRES])
async def browser(
    request: pytest.FixtureRequest, tmp_path: Path, dashboard_settings: dict[str, Any]
) -> AsyncIterator[Browser]:
    """A served engine (relay, matcher, dispatcher, statistics) and a client signed in to
    project ``p1``; project ``p2`` exists too."""
    async with served_engine(request.param, tmp_path, **dashboard_settings) as served:
        client = TestClient(served.server)
        await client.start_server()
        opened = Browser(client, served.engine, served.key, served.other_key)
        try:
            opened.csrf = await sign_in(client, served.key)
            yield opened
        finally:
            await client.close()
