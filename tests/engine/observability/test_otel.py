"""OpenTelemetry traces: nothing when off; when on, a FHIR write over HTTP that a rest-hook
subscription and a bot subscription match produces the write's, the relay's, the match's, the
delivery attempts' and the bot run's spans, all of one trace id (the request's traceparent),
exported over OTLP/HTTP to a real receiver that decodes the protobuf."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from fhirbots.engine.observability import otel
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from tests.engine.scenarios.bots import store_bot
from tests.engine.scenarios.delivery import Receiver
from tests.waiting import eventually

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_off_by_default_costs_a_shared_null_context() -> None:
    assert not otel.enabled()
    assert otel.span("x", TRACEPARENT) is otel.span("y", None)
    assert otel.spans("x", iter(())) is otel.span("z", None)
    assert otel.configure(None, "fhirbots-test") is False


class Collector:
    """An OTLP/HTTP trace receiver: every exported span as (name, trace id hex)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource in export.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend((s.name, s.trace_id.hex()) for s in scope.spans)
        return web.Response(body=b"", content_type="application/x-protobuf")


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    received = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", received.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield received, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def tracing_to(endpoint: str) -> Iterator[None]:
    assert otel.configure(endpoint, "fhirbots-test")
    try:
        yield
    finally:
        otel.shutdown()


async def test_write_match_and_delivery_share_one_trace(
    collector: tuple[Collector, str], receiver: Receiver, tmp_path: Path
) -> None:
    received, endpoint = collector
    engine = Engine(Settings(data_dir=tmp_path, allowed_endpoint_networks=("127.0.0.1/32",)))
    await engine.open()
    key = await engine.create_project("p1", "Project one")
    await engine.start_relay()
    await engine.start_matcher()
    await engine.start_dispatcher()
    await engine.start_bots(cron=False)
    bot = await store_bot(engine, "def handler(fhir, event):\n    return 'seen'\n")
    client = TestClient(TestServer(engine.app()))
    await client.start_server()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/fhir+json"}
    try:
        subscription = {
            "resourceType": "Subscription",
            "status": "active",
            "reason": "traces",
            "criteria": "Patient?gender=female",
            "channel": {"type": "rest-hook", "endpoint": f"{receiver.url}/hook"},
        }
        created = await client.post("/fhir/R4/Subscription", json=subscription, headers=headers)
        assert created.status == 201
        subscription["channel"] = {"type": "rest-hook", "endpoint": f"Bot/{bot}"}
        created = await client.post("/fhir/R4/Subscription", json=subscription, headers=headers)
        assert created.status == 201
        with tracing_to(endpoint):
            write = await client.post(
                "/fhir/R4/Patient",
                json={"resourceType": "Patient", "gender": "female"},
                headers={**headers, "traceparent": TRACEPARENT},
            )
            assert write.status == 201
            (hook,) = await receiver.wait_for("/hook", 1)
            assert hook.headers["traceparent"].split("-")[1] == TRACE_ID

            async def exported() -> set[str] | None:
                await asyncio.to_thread(otel.flush)  # the exporter posts to this loop's server
                names = {name for name, trace in received.spans if trace == TRACE_ID}
                wanted = {
                    "fhirbots.relay publish",
                    "fhirbots.match",
                    "fhirbots.delivery attempt",
                    "fhirbots.bot run",
                }
                return names if wanted <= names else None

            names = await eventually(exported, "the spans of the write's trace")
        assert any(name.startswith("HTTP POST") for name in names), names
    finally:
        await client.close()
        await engine.close()
