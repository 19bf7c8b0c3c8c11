"""Scenario helpers of the dashboard tests: a served engine, a browser-like client signed in
with a key of project ``p1`` (cookie and CSRF token), and a second project ``p2``."""

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

__all__ = [
    "Browser",
    "Client",
    "Served",
    "browser",
    "dashboard_settings",
    "new_client",
    "served_engine",
    "sign_in",
]

Client = TestClient[web.Request, web.Application]
"""A test client of the engine's HTTP application."""

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


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
