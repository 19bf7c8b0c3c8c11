"""Tests of the HTTP server around the API: malformed HTTP gets an OperationOutcome and one log
line, bodies are bounded, and every request gets one access-log line without query values."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from fhirbots.engine.api.server import ApiRunner
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import API_PATH, Settings
from tests.engine.conftest import open_storage


@dataclass
class Served:
    port: int
    token: str

    async def exchange(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send ``raw`` bytes as one request; the status, headers and body of the answer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(raw)
        await writer.drain()
        answer = await reader.read()
        writer.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return int(status_line.split()[1]), headers, body

    def request(self, method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            f"Authorization: Bearer {self.token}",
            "Connection: close",
            *headers,
        ]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[Served]:
    """An engine with a project ``p1`` behind :class:`ApiRunner` on a free port."""
    engine = Engine(settings, storage=await open_storage("sqlite", settings.data_dir))
    token = await engine.create_project("p1", "Project one")
    runner = ApiRunner(engine.app(), settings)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    try:
        yield Served(server.sockets[0].getsockname()[1], token)
    finally:
        await runner.cleanup()
        await engine.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    settings = Settings(data_dir=tmp_path, max_url_bytes=2048, max_request_bytes=64 * 1024)
    async with serve(settings) as running:
        yield running


def outcome_text(body: bytes) -> str:
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    return " ".join(issue["diagnostics"] for issue in outcome["issue"])


async def test_an_over_long_url_is_a_400_outcome_naming_the_setting(served: Served) -> None:
    target = f"{API_PATH}/Patient?name={'a' * 4000}"
    with capture_logs() as logs:
        status, headers, body = await served.exchange(served.request("GET", target))
    assert status == 400
    assert headers["content-type"].startswith("application/fhir+json")
    assert "FHIRBOTS_MAX_URL_BYTES" in outcome_text(body)
    assert "aaaa" not in outcome_text(body)
    refused = [entry for entry in logs if entry["event"] == "malformed request"]
    assert len(refused) == 1 and refused[0]["status"] == 400
    assert "exc_info" not in refused[0]


@pytest.mark.parametrize(
    "headers",
    [
        ("Content-Type: application/fhir+json", "Content-Type: application/json"),
        ("Content-Length: 2", "Content-Length: 3"),
        ("Bad Header Name: x",),
    ],
    ids=["duplicate-content-type", "conflicting-lengths", "space-in-name"],
)
async def test_malformed_headers_are_a_400_outcome(served: Served, headers: tuple[str]) -> None:
    raw = served.request("POST", f"{API_PATH}/Patient", *headers) + b'{"resourceType":"Patient"}'
    status, response_headers, body = await served.exchange(raw)
    assert status == 400
    assert response_headers["content-type"].startswith("application/fhir+json")
    assert outcome_text(body).startswith("malformed HTTP request")


async def test_a_body_that_claims_gzip_but_is_not_is_a_400(served: Served) -> None:
    raw = served.request(
        "POST",
        f"{API_PATH}/Patient",
        "Content-Type: application/fhir+json",
        "Content-Encoding: gzip",
        body=b'{"resourceType":"Patient"}',
    )
    with capture_logs() as logs:
        status, _, body = await served.exchange(raw)
    assert status == 400
    assert "not valid gzip" in outcome_text(body)
    assert not [entry for entry in logs if entry.get("log_level") == "error"]


async def test_a_body_over_the_limit_is_a_413_naming_the_setting(served: Served) -> None:
    big = json.dumps({"resourceType": "Patient", "text": {"div": "x" * 70_000}}).encode()
    raw = served.request(
        "POST", f"{API_PATH}/Patient", "Content-Type: application/fhir+json", body=big
    )
    status, _, body = await served.exchange(raw)
    assert status == 413
    assert "FHIRBOTS_MAX_REQUEST_BYTES" in outcome_text(body)


async def test_each_request_has_one_access_line_without_query_values(served: Served) -> None:
    target = f"{API_PATH}/Patient?name=Secret-Name&birthdate=1970"
    with capture_logs() as logs:
        status, _, _ = await served.exchange(served.request("GET", target))
    assert status == 200
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["method"] == "GET"
    assert line["path"] == f"{API_PATH}/Patient"
    assert line["params"] == ["birthdate", "name"]
    assert line["status"] == 200
    assert line["project"] == "p1"
    assert line["duration_ms"] >= 0
    assert len(line["trace_id"]) == 32
    assert "Secret-Name" not in repr(logs)


async def test_the_access_log_can_be_turned_off(tmp_path: Path) -> None:
    async with serve(Settings(data_dir=tmp_path, access_log=False)) as served:
        with capture_logs() as logs:
            status, _, _ = await served.exchange(served.request("GET", f"{API_PATH}/Patient"))
    assert status == 200
    assert not [entry for entry in logs if entry["event"] == "request"]
