"""End to end through the HTTP API: matcher + dispatcher in one engine, a real receiver."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType, WSServerHandshakeError, web
from aiohttp.test_utils import TestClient, TestServer

from fhirbots.engine.delivery.bot import BotInvocation
from fhirbots.engine.delivery.policy import BACKPORT_HEARTBEAT_URL, MAX_ATTEMPTS_URLS
from fhirbots.engine.eventlog.port import Record
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.schemas.notifications import Notification
from tests.engine.scenarios.delivery import Receiver
from tests.waiting import eventually

TOPIC_URL = "http://example.org/topics/patient-change"
CONTENT_URL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content"
)


class Api:
    def __init__(
        self, client: TestClient[web.Request, web.Application], engine: Engine, token: str
    ) -> None:
        self.client = client
        self.engine = engine
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/fhir+json",
        }

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.client.request(
            method, "/fhir/R4" + path, headers=self.headers, json=body
        )
        text = await response.text()
        assert response.status == status, f"{method} {path}: {response.status} {text}"
        return json.loads(text) if text else None

    async def subscription(self, sid: str, channel: dict[str, Any], **extra: Any) -> Any:
        resource = {
            "resourceType": "Subscription",
            "id": sid,
            "status": extra.pop("status", "active"),
            "reason": "test",
            "criteria": extra.pop("criteria", "Patient?gender=female"),
            "channel": channel,
            **extra,
        }
        return await self.call("PUT", f"/Subscription/{sid}", resource, status=201)

    async def patient(self, name: str = "Ann") -> Any:
        body = {"resourceType": "Patient", "gender": "female", "name": [{"family": name}]}
        return await self.call("POST", "/Patient", body, status=201)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(data_dir=tmp_path, allowed_endpoint_networks=("127.0.0.1/32",))
    engine = Engine(settings)
    await engine.open()
    token = await engine.create_project("p1", "Project one")
    await engine.start_relay()
    await engine.start_matcher()
    dispatcher = await engine.start_dispatcher()
    await dispatcher.wait_assigned()
    client = TestClient(TestServer(engine.app()))
    await client.start_server()
    yield Api(client, engine, token)
    await client.close()
    await engine.close()


def _hook(receiver: Receiver, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "rest-hook",
        "endpoint": receiver.url + path,
        "payload": "application/fhir+json",
        **extra,
    }


async def test_write_patient_reaches_rest_hook_then_status_and_events(
    api: Api, receiver: Receiver
) -> None:
    await api.subscription("s1", _hook(receiver, "/e2e"))
    first = await api.patient("One")
    second = await api.patient("Two")
    got = await receiver.wait_for("/e2e", 2)
    # Two resources travel on different partitions of fhir.changes.v1, so the matcher may
    # emit them in either order; the numbers follow the order the dispatcher received them.
    assert {json.loads(r.body)["id"] for r in got} == {first["id"], second["id"]}
    assert [r.headers["X-Event-Number"] for r in got] == ["1", "2"]
    second = json.loads(got[1].body)

    status = await api.call("GET", "/Subscription/s1/$status")
    (entry,) = status["entry"]
    assert entry["resource"]["resourceType"] == "SubscriptionStatus"
    assert entry["resource"]["eventsSinceSubscriptionStart"] == "2"
    assert entry["resource"]["status"] == "active"
    both = await api.call("GET", "/Subscription/$status?id=s1")
    assert both["total"] == 1
    every = await api.call("GET", "/Subscription/$status")
    assert [e["resource"]["subscription"]["reference"] for e in every["entry"]] == [
        "Subscription/s1"
    ]

    events = await api.call("GET", "/Subscription/s1/$events?eventsSinceNumber=2")
    assert events["type"] == "subscription-notification"
    listed = events["entry"][0]["resource"]["notificationEvent"]
    assert [e["eventNumber"] for e in listed] == ["2"]
    assert events["entry"][1]["resource"]["id"] == second["id"]
    posted = await api.call(
        "POST",
        "/Subscription/s1/$events",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "eventsSinceNumber", "valueString": "1"},
                {"name": "eventsUntilNumber", "valueString": "1"},
            ],
        },
    )
    assert [e["eventNumber"] for e in posted["entry"][0]["resource"]["notificationEvent"]] == ["1"]
    ids_only = await api.call("GET", "/Subscription/s1/$events?content=id-only")
    assert all("resource" not in e for e in ids_only["entry"][1:])
    assert len(ids_only["entry"]) == 3
    await api.call("GET", "/Subscription/nope/$status", status=404)
    await api.call("GET", "/Subscription/s1/$events?eventsSinceNumber=x", status=400)


async def test_dead_letters_through_the_api(api: Api, receiver: Receiver) -> None:
    healthy = False

    async def flaky(_: web.Request, __: int) -> web.Response:
        return web.Response(status=200 if healthy else 500)

    receiver.on("/dl", flaky)
    await api.subscription(
        "s1",
        _hook(receiver, "/dl"),
        extension=[{"url": MAX_ATTEMPTS_URLS[0], "valueInteger": 1}],
    )
    await api.patient()
    await api.patient()

    async def two_dead() -> bool:
        found = await api.call("GET", "/Subscription/$dead-letters")
        return len(found.get("parameter", [])) == 2

    await eventually(two_dead, "two dead letters")
    listed = await api.call("GET", "/Subscription/$dead-letters?subscription=s1")
    parts = [{p["name"]: p for p in d["part"]} for d in listed["parameter"]]
    assert [p["eventNumber"]["valueInteger"] for p in parts] == [1, 2]
    assert "HTTP 500" in parts[0]["error"]["valueString"]
    first_id = parts[0]["id"]["valueString"]

    discarded = await api.call(
        "POST", f"/Subscription/$dead-letters/$discard?id={parts[1]['id']['valueString']}"
    )
    assert discarded["parameter"][0]["valueInteger"] == 1
    healthy = True
    retried = await api.call("POST", "/Subscription/$dead-letters/$retry")
    assert retried["parameter"][0]["valueInteger"] == 1
    await receiver.wait_for("/dl", 3)
    assert receiver.at("/dl")[-1].headers["X-Notification-Id"] == first_id
    assert receiver.at("/dl")[-1].headers["X-Event-Number"] == "1"

    async def active() -> bool:
        found = await api.call("GET", "/Subscription/s1")
        return bool(found["status"] == "active")

    # The matcher skips subscriptions in error: write once delivery has recovered.
    await eventually(active, "status active after the retried delivery")
    patient = await api.patient("Three")
    await receiver.wait_for("/dl", 4)
    resent = await api.call("POST", f"/Subscription/s1/$resend?resource=Patient/{patient['id']}")
    numbers = {p["name"]: p for p in resent["parameter"]}
    assert numbers["eventNumber"]["valueInteger"] == 4
    got = await receiver.wait_for("/dl", 5)
    assert json.loads(got[-1].body)["id"] == patient["id"]
    assert got[-1].headers["X-Event-Number"] == "4"
    await api.call("POST", "/Subscription/s1/$resend?resource=Patient/missing", status=404)


async def test_websocket_binds_and_receives(api: Api) -> None:
    await api.subscription("ws1", {"type": "websocket", "payload": "application/fhir+json"})
    token_params = await api.call("POST", "/Subscription/ws1/$get-ws-binding-token")
    params = {p["name"]: p for p in token_params["parameter"]}
    url = params["websocket-url"]["valueUrl"]
    token = params["token"]["valueString"]
    assert url.startswith("ws://") and url.endswith(
        f"/fhir/R4/Subscription/$websocket?token={token}"
    )
    socket = await api.client.ws_connect("/fhir/R4" + url.split("/fhir/R4", 1)[1])
    await socket.send_str("bind-with-token not-a-token")
    refused = await eventually(socket.receive, "the answer to a bad token")
    assert refused.type == WSMsgType.TEXT and refused.data.startswith("error")
    await socket.send_str(f"bind-with-token {token}")
    handshake = json.loads((await eventually(socket.receive, "the handshake")).data)
    assert handshake["entry"][0]["resource"]["type"] == "handshake"
    patient = await api.patient()
    message = await eventually(socket.receive, "the notification")
    bundle = json.loads(message.data)
    status = bundle["entry"][0]["resource"]
    assert status["type"] == "event-notification"
    assert status["notificationEvent"][0]["eventNumber"] == "1"
    assert bundle["entry"][1]["resource"]["id"] == patient["id"]
    await socket.close()


async def test_message_channel_publishes_on_the_projects_topic(api: Api) -> None:
    topic = "project.p1.acme.patients.v1"  # the project's namespace
    await api.subscription(
        "m1",
        {"type": "message", "endpoint": "acme.patients.v1", "payload": "application/fhir+json"},
    )
    patient = await api.patient()
    log = api.engine.event_log
    assert log is not None

    async def read_all() -> list[Record]:
        try:
            ends = await log.end_offsets(topic)
        except Exception:
            return []
        out: list[Record] = []
        for partition in ends:
            out.extend(await log.read(topic, partition, offset=0))
        return out

    async def arrived() -> bool:
        return len(await read_all()) == 1

    await eventually(arrived, "the message on its topic")
    (record,) = await read_all()
    assert record.key == "p1/m1"
    assert record.header("X-Event-Number") == b"1"
    bundle = json.loads(record.value)
    assert bundle["entry"][1]["resource"]["id"] == patient["id"]


class RecordingInvoker:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Notification, str]] = []

    async def invoke(
        self, project: str, bot_id: str, notification: Notification, idempotency_key: str
    ) -> BotInvocation:
        self.calls.append((project, bot_id, notification, idempotency_key))
        return BotInvocation(len(self.calls) > 1, None if len(self.calls) > 1 else "crashed")


async def test_bot_endpoint_routes_to_invoker(api: Api) -> None:
    invoker = RecordingInvoker()
    assert api.engine.dispatcher is not None
    api.engine.dispatcher.set_bot_invoker(invoker)
    await api.subscription("b1", {"type": "rest-hook", "endpoint": "Bot/triage"})
    patient = await api.patient()

    async def two_calls() -> bool:
        return len(invoker.calls) >= 2

    await eventually(two_calls, "the bot invoked a second time")
    project, bot_id, notification, key = invoker.calls[0]
    assert (project, bot_id) == ("p1", "triage")
    assert notification.resource is not None and notification.resource["id"] == patient["id"]
    assert key == "p1/b1:1" and invoker.calls[1][3] == key


async def test_topic_handshake_activates_and_heartbeats_arrive(
    api: Api, receiver: Receiver
) -> None:
    topic = {
        "resourceType": "SubscriptionTopic",
        "url": TOPIC_URL,
        "status": "active",
        "resourceTrigger": [{"resource": "Patient", "supportedInteraction": ["create", "update"]}],
    }
    await api.call("POST", "/SubscriptionTopic", topic, status=201)
    channel = {
        "type": "rest-hook",
        "endpoint": receiver.url + "/topic",
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": CONTENT_URL, "valueCode": "id-only"}]},
        "extension": [{"url": BACKPORT_HEARTBEAT_URL, "valueUnsignedInt": 1}],
    }
    await api.subscription("t1", channel, status="requested", criteria=TOPIC_URL)
    (handshake,) = await receiver.wait_for("/topic", 1)
    status = json.loads(handshake.body)["entry"][0]["resource"]
    assert status["type"] == "handshake" and status["status"] == "requested"

    async def active() -> bool:
        found = await api.call("GET", "/Subscription/t1")
        return bool(found["status"] == "active")

    await eventually(active, "status active after the handshake")
    patient = await api.patient()

    def kinds() -> list[str]:
        return [json.loads(r.body)["entry"][0]["resource"]["type"] for r in receiver.at("/topic")]

    async def notified_and_heartbeat() -> bool:
        seen = kinds()
        return "event-notification" in seen and seen.count("heartbeat") >= 1

    await eventually(notified_and_heartbeat, "a notification and a heartbeat")
    note = next(
        json.loads(r.body)
        for r in receiver.at("/topic")
        if json.loads(r.body)["entry"][0]["resource"]["type"] == "event-notification"
    )
    assert note["entry"][1]["fullUrl"].endswith(f"/Patient/{patient['id']}")
    assert "resource" not in note["entry"][1]


async def test_requested_criteria_subscription_is_set_up_and_fires(
    api: Api, receiver: Receiver
) -> None:
    await api.subscription("r1", _hook(receiver, "/r1"), status="requested")

    async def active() -> bool:
        found = await api.call("GET", "/Subscription/r1")
        return bool(found["status"] == "active")

    await eventually(active, "status active once set up")
    await api.patient()
    assert len(await receiver.wait_for("/r1", 1)) == 1


async def test_failed_handshake_sets_error(api: Api, receiver: Receiver) -> None:
    async def refuse(_: web.Request, __: int) -> web.Response:
        return web.Response(status=403)

    receiver.on("/refuse", refuse)
    topic = {
        "resourceType": "SubscriptionTopic",
        "url": TOPIC_URL,
        "status": "active",
        "resourceTrigger": [{"resource": "Patient", "supportedInteraction": ["create"]}],
    }
    await api.call("POST", "/SubscriptionTopic", topic, status=201)
    await api.subscription("t2", _hook(receiver, "/refuse"), status="requested", criteria=TOPIC_URL)

    async def errored() -> bool:
        found = await api.call("GET", "/Subscription/t2")
        return bool(found["status"] == "error")

    await eventually(errored, "status error after the handshake")
    found = await api.call("GET", "/Subscription/t2")
    assert "403" in found["error"]
    await asyncio.sleep(0)


async def test_websocket_heartbeats_for_topic_subscription(api: Api) -> None:
    topic = {
        "resourceType": "SubscriptionTopic",
        "url": TOPIC_URL,
        "status": "active",
        "resourceTrigger": [{"resource": "Patient", "supportedInteraction": ["create"]}],
    }
    await api.call("POST", "/SubscriptionTopic", topic, status=201)
    channel = {
        "type": "websocket",
        "payload": "application/fhir+json",
        "extension": [{"url": BACKPORT_HEARTBEAT_URL, "valueUnsignedInt": 1}],
    }
    await api.subscription("wsb", channel, criteria=TOPIC_URL)
    token = await api.call("GET", "/Subscription/wsb/$get-ws-binding-token")
    value = token["parameter"][0]["valueString"]
    # Opened with the key that asked for the token (rather than the token in the URL).
    socket = await api.client.ws_connect(
        "/fhir/R4/Subscription/$websocket", headers={"Authorization": api.headers["Authorization"]}
    )
    await socket.send_str(f"bind-with-token {value}")
    kinds: list[str] = []

    async def heartbeat() -> bool:
        message = await socket.receive()
        kinds.append(json.loads(message.data)["entry"][0]["resource"]["type"])
        return kinds[-1] == "heartbeat"

    await eventually(heartbeat, "a heartbeat on the socket")
    assert kinds[0] == "handshake"
    await socket.close()


WS_PATH = "/fhir/R4/Subscription/$websocket"


async def _token(api: Api, sid: str, headers: dict[str, str] | None = None) -> str:
    response = await api.client.post(
        f"/fhir/R4/Subscription/{sid}/$get-ws-binding-token", headers=headers or api.headers
    )
    assert response.status == 200, await response.text()
    params = {p["name"]: p for p in (await response.json())["parameter"]}
    return str(params["token"]["valueString"])


async def _refused_upgrade(api: Api, path: str, headers: dict[str, str] | None = None) -> None:
    with pytest.raises(WSServerHandshakeError) as caught:
        await api.client.ws_connect(path, headers=headers)
    assert caught.value.status == 401


async def _answer(socket: ClientWebSocketResponse) -> str:
    message = await eventually(socket.receive, "the socket's answer")
    assert message.type == WSMsgType.TEXT
    return str(message.data)


async def test_websocket_upgrade_needs_a_valid_token_or_key(api: Api) -> None:
    await api.subscription("ws2", {"type": "websocket"})
    await _refused_upgrade(api, WS_PATH)
    await _refused_upgrade(api, f"{WS_PATH}?token=")
    await _refused_upgrade(api, f"{WS_PATH}?token=not-a-token")
    await _refused_upgrade(api, WS_PATH, {"Authorization": "Bearer fhb_not-a-key"})
    response = await api.client.get(WS_PATH)
    assert response.status == 401
    assert (await response.json())["resourceType"] == "OperationOutcome"


async def test_websocket_token_is_single_use(api: Api) -> None:
    await api.subscription("ws3", {"type": "websocket"})
    token = await _token(api, "ws3")
    first = await api.client.ws_connect(f"{WS_PATH}?token={token}")
    await first.send_str(f"bind-with-token {token}")
    assert json.loads(await _answer(first))["entry"][0]["resource"]["type"] == "handshake"
    # The same token again: refused in a URL, and as a message on a socket of the same key.
    await _refused_upgrade(api, f"{WS_PATH}?token={token}")
    second = await api.client.ws_connect(
        WS_PATH, headers={"Authorization": api.headers["Authorization"]}
    )
    await second.send_str(f"bind-with-token {token}")
    assert (await _answer(second)).startswith("error: unknown, expired or already used")
    assert api.engine.dispatcher is not None and api.engine.dispatcher.hub is not None
    assert api.engine.dispatcher.hub.bound("p1", "ws3") == 1
    await first.close()
    await second.close()


async def test_websocket_token_binds_only_for_the_key_that_asked(api: Api) -> None:
    await api.subscription("ws4", {"type": "websocket"})
    other_project = await api.engine.create_project("p2", "Project two")
    other_key = await api.engine.create_project("p1", "Project one")  # a second key of p1
    foreign = {"Authorization": f"Bearer {other_project}"}
    # Project two cannot even ask for a token of project one's subscription.
    response = await api.client.post(
        "/fhir/R4/Subscription/ws4/$get-ws-binding-token", headers=foreign
    )
    assert response.status == 404 and "ws4" not in (await response.text()).replace(
        "Subscription/ws4 is not known", ""
    )
    for key in (other_project, other_key):
        token = await _token(api, "ws4")
        socket = await api.client.ws_connect(WS_PATH, headers={"Authorization": f"Bearer {key}"})
        await socket.send_str(f"bind-with-token {token}")
        assert (await _answer(socket)).startswith("error: the token was issued to another key")
        await socket.close()
        # Claimed by the refused attempt: the token is spent.
        await _refused_upgrade(api, f"{WS_PATH}?token={token}")
    # A socket opened with one token binds another token of the same key, not of another.
    mine, theirs = await _token(api, "ws4"), await _token(api, "ws4")
    other_token = await _token(api, "ws4", {**api.headers, "Authorization": f"Bearer {other_key}"})
    socket = await api.client.ws_connect(f"{WS_PATH}?token={mine}")
    await socket.send_str(f"bind-with-token {other_token}")
    assert (await _answer(socket)).startswith("error: the token was issued to another key")
    await socket.send_str(f"bind-with-token {theirs}")
    assert json.loads(await _answer(socket))["entry"][0]["resource"]["type"] == "handshake"
    await socket.close()
