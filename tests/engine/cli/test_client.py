"""The CLI's FHIR client: every failure is a ClientError, the cause chained."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fhirbots.engine.cli.client import UNREACHABLE, ClientError, FhirClient, client_settings


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    async def html(_request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>Bad Gateway</html>")

    async def missing(_request: web.Request) -> web.Response:
        outcome = {"resourceType": "OperationOutcome", "issue": [{"diagnostics": "no Patient/1"}]}
        return web.json_response(outcome, status=404)

    app = web.Application()
    app.router.add_get("/html", html)
    app.router.add_get("/missing", missing)
    running = TestServer(app)
    await running.start_server()
    yield running
    await running.close()


async def test_an_error_answer_carries_status_and_outcome(server: TestServer) -> None:
    async with FhirClient(client_settings(str(server.make_url("")), {})) as client:
        with pytest.raises(ClientError, match="HTTP 404: no Patient/1") as failed:
            await client.request("GET", "missing")
    assert failed.value.status == 404
    assert failed.value.outcome["resourceType"] == "OperationOutcome"


async def test_an_answer_that_is_not_json_is_a_client_error(server: TestServer) -> None:
    async with FhirClient(client_settings(str(server.make_url("")), {})) as client:
        with pytest.raises(ClientError, match="not JSON") as failed:
            await client.request("GET", "html")
    assert failed.value.status == 502


async def test_an_unreachable_server_is_a_client_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with FhirClient(client_settings(f"http://127.0.0.1:{port}/fhir/R4", {})) as client:
        with pytest.raises(ClientError) as failed:
            await client.request("GET", "metadata")
    assert failed.value.status == UNREACHABLE
    assert isinstance(failed.value.__cause__, aiohttp.ClientError)
