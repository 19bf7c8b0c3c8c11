"""Scenario helpers of the delivery tests: a real HTTP receiver, an engine with a running
dispatcher on the embedded log, Subscriptions and notifications."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fhirbots.engine.delivery.policy import Backoff, DeliveryDefaults
from fhirbots.engine.delivery.store import DeliveryStore
from fhirbots.engine.delivery.store_sqlite import SqliteDeliveryStore
from fhirbots.engine.delivery.websocket import WebSocketHub
from fhirbots.engine.eventlog.port import EventLog
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.stages.dispatcher import Dispatcher
from fhirbots.engine.storage.model import WriteContext
from fhirbots.schemas.notifications import ChannelSpec, Notification
from fhirbots.schemas.topics import NOTIFICATIONS
from tests.waiting import eventually

PROJECT = "p1"

FAST = DeliveryDefaults(
    timeout=5.0,
    max_attempts=4,
    auto_disable_after=3,
    backoff=Backoff(initial=0.02, maximum=0.1, jitter=0.5),
    allowed_networks=("127.0.0.1/32",),
)
"""Short back-off so retry tests take milliseconds; loopback allowed, as the brief says."""


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float


Responder = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1 recording every request; per-path behaviour."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    behaviours: dict[str, Responder] = field(default_factory=dict)

    def on(self, path: str, responder: Responder) -> None:
        self.behaviours[path] = responder

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        count = len(self.at(request.path)) + 1
        self.received.append(Received(request.path, dict(request.headers), body, time.time()))
        responder = self.behaviours.get(request.path)
        if responder is not None:
            return await responder(request, count)
        return web.Response(status=200)

    async def wait_for(self, path: str, count: int) -> list[Received]:
        """Wait until ``path`` has had ``count`` requests (or more); returns them all."""

        def arrived() -> list[Received] | None:
            got = self.at(path)
            return got if len(got) >= count else None

        return await eventually(arrived, f"{count} requests at {path}")


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A real local HTTP receiver on 127.0.0.1 (a free port) while the context lasts."""
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A real local HTTP receiver."""
    async with running_receiver() as rec:
        yield rec


class Harness:
    """An engine (SQLite datastore, embedded log) with a dispatcher to start and stop."""

    def __init__(self, engine: Engine, data_dir: Path, defaults: DeliveryDefaults) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.defaults = defaults
        self.hub = WebSocketHub()
        self.dispatcher: Dispatcher | None = None
        self.store: DeliveryStore | None = None
        self._seq = 0

    @property
    def log(self) -> EventLog:
        assert self.engine.event_log is not None
        return self.engine.event_log

    async def start(self, store: DeliveryStore | None = None, **kwargs: Any) -> Dispatcher:
        if store is None:
            store = SqliteDeliveryStore(self.data_dir / "delivery.db")
        await store.open()
        self.store = store
        self.dispatcher = Dispatcher(
            event_log=self.log,
            store=store,
            storage=self.engine.storage,
            fhir=self.engine.fhir,
            defaults=self.defaults,
            base_url="http://127.0.0.1/fhir/R4",
            hub=self.hub,
            **kwargs,
        )
        await self.dispatcher.start()
        await self.dispatcher.wait_assigned()
        return self.dispatcher

    async def stop(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop()
            self.dispatcher = None
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def subscription(
        self, sid: str, endpoint: str, *, status: str = "active", **extra: Any
    ) -> dict[str, Any]:
        channel = {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}
        channel.update(extra.pop("channel", {}))
        resource = {
            "resourceType": "Subscription",
            "status": status,
            "reason": "test",
            "criteria": extra.pop("criteria", "Patient?gender=female"),
            "channel": channel,
            **extra,
        }
        result = await self.engine.fhir.update(
            PROJECT, "Subscription", sid, resource, WriteContext(author="test")
        )
        assert result.stored is not None and result.stored.content is not None
        return result.stored.content

    def notification(
        self, sid: str, endpoint: str, *, resource_id: str | None = None, **channel: Any
    ) -> Notification:
        self._seq += 1
        rid = resource_id or f"pt{self._seq}"
        topic = channel.pop("topic", None)
        return Notification(
            notification_id=f"{sid}:ev{self._seq}",
            project=PROJECT,
            subscription_id=sid,
            subscription_version="1",
            event_id=f"ev{self._seq}",
            interaction="create",
            resource_type="Patient",
            resource_id=rid,
            version_id="1",
            resource={"resourceType": "Patient", "id": rid, "gender": "female"},
            time=datetime.now(UTC),
            channel=ChannelSpec(
                type=channel.pop("type", "rest-hook"),
                endpoint=endpoint,
                payload=channel.pop("payload", "application/fhir+json"),
                **channel,
            ),
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            topic=topic,
        )

    async def publish(self, *notifications: Notification) -> None:
        for n in notifications:
            await self.log.publish(NOTIFICATIONS, n.key, n.model_dump_json().encode())


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """Engine + event log; call ``await harness.start()`` for the dispatcher."""
    # The receivers listen on the loopback address, which endpoints may name only when allowed.
    engine = Engine(Settings(data_dir=tmp_path, allowed_endpoint_networks=("127.0.0.1/32",)))
    await engine.open()
    await engine.storage.ensure_project(PROJECT, "Project one")
    await engine.start_relay()
    h = Harness(engine, tmp_path, FAST)
    yield h
    await h.stop()
    await engine.close()
