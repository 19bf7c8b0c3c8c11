"""Readiness (phases and checks) and the management server over real HTTP: /livez, /readyz
naming each check, /metrics in the Prometheus text format, all without a key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from fhirbots.engine.observability import probes
from fhirbots.engine.observability.management import ManagementServer
from fhirbots.engine.observability.probes import Phase, Readiness


async def ok() -> str | None:
    return None


async def test_ready_only_while_running_and_every_check_passes() -> None:
    readiness = Readiness()
    readiness.add("database", ok)
    assert (await readiness.report())[0] is False  # starting
    readiness.running()
    ready, body = await readiness.report()
    assert ready is True
    assert body == {"status": "ready", "phase": "running", "checks": {"database": "ok"}}

    async def away() -> str | None:
        raise ConnectionRefusedError("connection refused")

    readiness.add("eventlog", away)
    ready, body = await readiness.report()
    assert ready is False
    assert body["checks"] == {
        "database": "ok",
        "eventlog": "ConnectionRefusedError: connection refused",
    }


async def test_draining_is_final() -> None:
    readiness = Readiness()
    readiness.running()
    readiness.drain()
    readiness.running()  # a late "started" does not undo the drain
    assert readiness.phase is Phase.DRAINING
    assert (await readiness.report())[1]["status"] == "unready"


async def test_a_check_that_hangs_fails_instead_of_hanging_the_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(probes, "CHECK_TIMEOUT_SECONDS", 0.01)
    never = asyncio.Event()

    async def hangs() -> str | None:
        await never.wait()
        return None

    readiness = Readiness()
    readiness.running()
    readiness.add("consumers", hangs)
    ready, body = await readiness.report()
    assert ready is False
    assert body["checks"] == {"consumers": "no answer within 0.01 s"}


@pytest.fixture
async def management() -> AsyncIterator[tuple[Readiness, str]]:
    readiness = Readiness()
    server = ManagementServer(readiness, "127.0.0.1", 0)
    await server.start()
    try:
        yield readiness, f"http://127.0.0.1:{server.port}"
    finally:
        await server.stop()


async def test_management_server_answers_probes_and_metrics(
    management: tuple[Readiness, str],
) -> None:
    readiness, base = management
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/livez") as live:
            assert live.status == 200
            assert (await live.json())["status"] == "ok"
        async with http.get(f"{base}/readyz") as starting:
            assert starting.status == 503
            assert (await starting.json())["phase"] == "starting"
        readiness.running()
        async with http.get(f"{base}/readyz") as ready:
            assert ready.status == 200
        readiness.drain()
        async with http.get(f"{base}/readyz") as draining:
            assert draining.status == 503
            assert (await draining.json())["phase"] == "draining"
        async with http.get(f"{base}/livez") as still_live:
            assert still_live.status == 200  # draining is not dead
        async with http.get(f"{base}/metrics") as metrics:
            assert metrics.status == 200
            assert metrics.content_type == "text/plain"
            text = await metrics.text()
    # The engine's metrics are registered on import; a few of each family are named here.
    import fhirbots.engine.runtime  # noqa: F401  (registers every stage's metrics)

    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as metrics:
        text = await metrics.text()
    for name in (
        "fhirbots_fhir_writes_total",
        "fhirbots_outbox_published_total",
        "fhirbots_matcher_notifications_total",
        "fhirbots_delivery_attempts_total",
        "fhirbots_delivery_attempt_seconds_bucket",
        "fhirbots_bot_executions_total",
        "fhirbots_bot_execution_seconds_bucket",
        "fhirbots_eventlog_consumed_total",
    ):
        assert f"# TYPE {name.removesuffix('_bucket')}" in text or name in text, name
