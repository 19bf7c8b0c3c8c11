"""The dispatcher against a real local HTTP receiver on the embedded event log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

from aiohttp import web

from fhirbots.engine.delivery.policy import SECRET_URLS
from fhirbots.engine.delivery.store_sqlite import SqliteDeliveryStore
from fhirbots.engine.stages.dispatcher import Dispatcher
from fhirbots.schemas.deliveries import DeliveryAttemptRecord
from fhirbots.schemas.topics import DELIVERIES
from tests.engine.scenarios.delivery import PROJECT, Harness, Receiver
from tests.waiting import eventually


async def test_rest_hook_posts_resource_with_headers_in_order(
    harness: Harness, receiver: Receiver
) -> None:
    await harness.subscription("s1", receiver.url + "/hook")
    await harness.start()
    notes = [harness.notification("s1", receiver.url + "/hook") for _ in range(5)]
    await harness.publish(*notes)
    got = await receiver.wait_for("/hook", 5)
    assert [r.headers["X-Event-Number"] for r in got] == ["1", "2", "3", "4", "5"]
    assert [json.loads(r.body)["id"] for r in got] == [n.resource_id for n in notes]
    first = got[0]
    assert first.headers["Content-Type"] == "application/fhir+json"
    trace = first.headers["traceparent"].split("-")
    assert trace[1] == "0af7651916cd43dd8448eb211c80319c"  # same trace as the change
    assert first.headers["X-Notification-Id"] == notes[0].notification_id
    assert "X-Signature" not in first.headers
    store = harness.store
    assert store is not None
    await eventually(
        lambda: _state(harness, notes[-1].notification_id, "delivered"), "the last delivered"
    )
    counters = await store.counters(PROJECT, "s1")
    assert counters.events_since_start == 5


async def _state(harness: Harness, notification_id: str, state: str) -> bool:
    assert harness.store is not None
    row = await harness.store.get(PROJECT, notification_id)
    return row is not None and row.state == state


async def test_empty_body_without_payload(harness: Harness, receiver: Receiver) -> None:
    await harness.subscription("s1", receiver.url + "/empty")
    await harness.start()
    await harness.publish(harness.notification("s1", receiver.url + "/empty", payload=None))
    (got,) = await receiver.wait_for("/empty", 1)
    assert got.body == b""
    assert got.headers["X-Event-Number"] == "1"


async def test_signature_is_hmac_of_body_with_medplum_secret(
    harness: Harness, receiver: Receiver
) -> None:
    secret = "s3cr3t-value"
    await harness.subscription(
        "signed",
        receiver.url + "/signed",
        extension=[{"url": SECRET_URLS[0], "valueString": secret}],
    )
    await harness.start()
    await harness.publish(harness.notification("signed", receiver.url + "/signed"))
    (got,) = await receiver.wait_for("/signed", 1)
    expected = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.body
    assert got.headers["X-Signature"] == expected


async def test_three_500s_then_success_keeps_number_and_order(
    harness: Harness, receiver: Receiver
) -> None:
    async def flaky(_: web.Request, count: int) -> web.Response:
        return web.Response(status=500 if count <= 3 else 200, text="boom")

    receiver.on("/flaky", flaky)
    await harness.subscription("s1", receiver.url + "/flaky")
    await harness.start()
    notes = [harness.notification("s1", receiver.url + "/flaky") for _ in range(3)]
    await harness.publish(*notes)
    got = await receiver.wait_for("/flaky", 6)
    numbers = [r.headers["X-Event-Number"] for r in got]
    assert numbers == ["1", "1", "1", "1", "2", "3"]
    ids = {r.headers["X-Notification-Id"] for r in got[:4]}
    assert ids == {notes[0].notification_id}
    assert harness.store is not None
    await eventually(
        lambda: _state(harness, notes[2].notification_id, "delivered"), "the third delivered"
    )
    row = await harness.store.get(PROJECT, notes[0].notification_id)
    assert row is not None and row.attempts == 4 and row.event_number == 1


async def test_slow_endpoint_does_not_delay_another_subscription(
    harness: Harness, receiver: Receiver
) -> None:
    release = asyncio.Event()

    async def stuck(_: web.Request, __: int) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    receiver.on("/slow", stuck)
    await harness.subscription("slow", receiver.url + "/slow")
    await harness.subscription("fast", receiver.url + "/fast")
    await harness.start()
    # Interleave on the topic: the slow subscription's events come first.
    for _ in range(3):
        await harness.publish(harness.notification("slow", receiver.url + "/slow"))
        await harness.publish(harness.notification("fast", receiver.url + "/fast"))
    # The slow endpoint holds its first request until released, and it is released only
    # after the fast subscription got all three: they arrive only if nothing waits for it.
    await receiver.wait_for("/fast", 3)
    assert len(receiver.at("/slow")) == 1  # still stuck on its first event, in order
    release.set()
    got = await receiver.wait_for("/slow", 3)
    assert [r.headers["X-Event-Number"] for r in got] == ["1", "2", "3"]


async def test_killed_mid_delivery_redelivers_with_same_number(
    harness: Harness, receiver: Receiver
) -> None:
    hang = asyncio.Event()

    async def first_hangs(_: web.Request, count: int) -> web.Response:
        if count == 1:
            await hang.wait()
        return web.Response(status=204)

    receiver.on("/crash", first_hangs)
    await harness.subscription("s1", receiver.url + "/crash")
    await harness.start()
    notes = [harness.notification("s1", receiver.url + "/crash") for _ in range(2)]
    await harness.publish(*notes)
    await receiver.wait_for("/crash", 1)
    await harness.stop()  # the dispatcher dies while the request is in flight
    hang.set()
    await harness.start()
    got = await receiver.wait_for("/crash", 3)
    assert [r.headers["X-Event-Number"] for r in got] == ["1", "1", "2"]
    assert got[0].headers["X-Notification-Id"] == got[1].headers["X-Notification-Id"]


async def test_redelivered_topic_record_keeps_its_number(
    harness: Harness, receiver: Receiver
) -> None:
    await harness.subscription("s1", receiver.url + "/dup")
    await harness.start()
    note = harness.notification("s1", receiver.url + "/dup")
    await harness.publish(note)
    await receiver.wait_for("/dup", 1)
    assert harness.store is not None
    accepted = await harness.store.accept([note])
    assert accepted[0].event_number == 1 and not accepted[0].new
    second = harness.notification("s1", receiver.url + "/dup")
    await harness.publish(second)
    got = await receiver.wait_for("/dup", 2)
    assert got[1].headers["X-Event-Number"] == "2"


async def test_dead_letter_error_status_audit_and_retry(
    harness: Harness, receiver: Receiver
) -> None:
    healthy = False

    async def down(_: web.Request, __: int) -> web.Response:
        return web.Response(status=200 if healthy else 503, text="maintenance")

    receiver.on("/down", down)
    await harness.subscription("s1", receiver.url + "/down")
    await harness.start()
    note = harness.notification("s1", receiver.url + "/down")
    await harness.publish(note)
    await eventually(lambda: _state(harness, note.notification_id, "dead"), "a dead letter")
    assert len(receiver.at("/down")) == harness.defaults.max_attempts
    assert harness.store is not None
    (dead,) = await harness.store.dead_letters(PROJECT)
    assert dead.last_error is not None and "503" in dead.last_error
    assert "maintenance" in dead.last_error

    async def status_is(value: str) -> bool:
        stored = await harness.engine.fhir.read(PROJECT, "Subscription", "s1")
        return stored.content is not None and stored.content["status"] == value

    await eventually(lambda: status_is("error"), "the Subscription's status error")
    stored = await harness.engine.fhir.read(PROJECT, "Subscription", "s1")
    assert stored.content is not None and "503" in stored.content["error"]
    audits = await _audit_events(harness)
    assert any("active -> error" in a.get("outcomeDesc", "") for a in audits)

    healthy = True
    dispatcher = harness.dispatcher
    assert dispatcher is not None
    assert await dispatcher.retry_dead_letters(PROJECT, [note.notification_id]) == 1
    await eventually(lambda: _state(harness, note.notification_id, "delivered"), "delivered")
    last = receiver.at("/down")[-1]
    assert last.headers["X-Event-Number"] == "1"
    await eventually(lambda: status_is("active"), "the Subscription's status active again")
    assert await harness.store.dead_letters(PROJECT) == []


async def _audit_events(harness: Harness) -> list[dict[str, Any]]:
    page = await harness.engine.fhir.history(PROJECT, "AuditEvent", count=100)
    return [e.content for e in page.entries if e.content is not None]


async def test_auto_disable_after_consecutive_failures(
    harness: Harness, receiver: Receiver
) -> None:
    async def dead(_: web.Request, __: int) -> web.Response:
        return web.Response(status=500)

    receiver.on("/dead", dead)
    await harness.subscription(
        "s1",
        receiver.url + "/dead",
        extension=[
            {
                "url": "https://medplum.com/fhir/StructureDefinition/subscription-max-attempts",
                "valueInteger": 1,
            }
        ],
    )
    await harness.start()
    notes = [harness.notification("s1", receiver.url + "/dead") for _ in range(4)]
    await harness.publish(*notes)

    async def is_off() -> bool:
        stored = await harness.engine.fhir.read(PROJECT, "Subscription", "s1")
        return stored.content is not None and stored.content["status"] == "off"

    await eventually(is_off, "the Subscription's status off")
    await eventually(lambda: _state(harness, notes[3].notification_id, "dead"), "the 4th dead")
    # One attempt each for the first three (max-attempts 1); the fourth is not sent: off.
    assert len(receiver.at("/dead")) == 3
    audits = await _audit_events(harness)
    descriptions = [str(a.get("outcomeDesc")) for a in audits]
    assert any("error -> off" in d for d in descriptions)


async def test_success_codes_extension(harness: Harness, receiver: Receiver) -> None:
    async def not_found(_: web.Request, __: int) -> web.Response:
        return web.Response(status=404)

    receiver.on("/gone", not_found)
    await harness.subscription(
        "s1",
        receiver.url + "/gone",
        extension=[
            {
                "url": "https://medplum.com/fhir/StructureDefinition/subscription-success-codes",
                "valueString": "200-399,404",
            }
        ],
    )
    await harness.start()
    note = harness.notification("s1", receiver.url + "/gone")
    await harness.publish(note)
    await eventually(lambda: _state(harness, note.notification_id, "delivered"), "delivered")
    assert len(receiver.at("/gone")) == 1


async def test_loopback_refused_unless_allowed(harness: Harness, receiver: Receiver) -> None:
    harness.defaults = harness.defaults.with_changes(allowed_networks=())
    await harness.subscription("s1", receiver.url + "/private")
    await harness.start()
    note = harness.notification("s1", receiver.url + "/private")
    await harness.publish(note)
    await eventually(lambda: _state(harness, note.notification_id, "dead"), "a dead letter")
    assert receiver.at("/private") == []
    assert harness.store is not None
    row = await harness.store.get(PROJECT, note.notification_id)
    assert row is not None and row.attempts == 1
    assert row.last_error is not None and "FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS" in row.last_error


async def test_audit_every_attempt_when_asked(harness: Harness, receiver: Receiver) -> None:
    await harness.subscription(
        "s1",
        receiver.url + "/audited",
        extension=[
            {
                "url": "https://fhirbots.dev/fhir/StructureDefinition/subscription-audit-event",
                "valueCode": "always",
            }
        ],
    )
    await harness.start()
    note = harness.notification("s1", receiver.url + "/audited")
    await harness.publish(note)
    await eventually(lambda: _state(harness, note.notification_id, "delivered"), "delivered")
    audits = await _audit_events(harness)
    transmit = [
        a
        for a in audits
        if a["type"]
        == {
            "system": "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle",
            "code": "transmit",
        }
    ]
    assert len(transmit) == 1 and transmit[0]["outcome"] == "0"


async def test_two_dispatchers_share_subscriptions_in_order(
    harness: Harness, receiver: Receiver
) -> None:
    subscriptions = [f"s{i}" for i in range(12)]
    for sid in subscriptions:
        await harness.subscription(sid, f"{receiver.url}/{sid}")
    first = await harness.start()
    second_store = SqliteDeliveryStore(harness.data_dir / "delivery.db")
    await second_store.open()
    second = Dispatcher(
        event_log=harness.log,
        store=second_store,
        storage=harness.engine.storage,
        fhir=harness.engine.fhir,
        defaults=harness.defaults,
        base_url="http://127.0.0.1/fhir/R4",
    )
    await second.start()
    try:
        await second.wait_assigned()

        async def split() -> bool:
            assert first._consumer is not None and second._consumer is not None
            return bool(first._consumer.assignment()) and bool(second._consumer.assignment())

        await eventually(split, "partitions shared by both dispatchers")
        for _ in range(5):
            for sid in subscriptions:
                await harness.publish(harness.notification(sid, f"{receiver.url}/{sid}"))
        owners = {
            sid: (first.owns(PROJECT, sid), second.owns(PROJECT, sid)) for sid in subscriptions
        }
        assert all(a != b for a, b in owners.values())  # exactly one owner each
        assert {a for a, _ in owners.values()} == {True, False}  # both have some
        for sid in subscriptions:
            got = await receiver.wait_for(f"/{sid}", 5)
            assert [r.headers["X-Event-Number"] for r in got] == ["1", "2", "3", "4", "5"]
        assert len(receiver.received) == 60  # each exactly once
    finally:
        await second.stop()
        await second_store.close()


async def test_every_attempt_is_recorded_on_the_deliveries_topic(
    harness: Harness, receiver: Receiver
) -> None:
    async def flaky(_: web.Request, attempt: int) -> web.Response:
        return web.Response(status=500 if attempt < 3 else 200, text=f"answer {attempt}")

    receiver.on("/flaky", flaky)
    await harness.subscription("s1", receiver.url + "/flaky")
    await harness.start()
    note = harness.notification("s1", receiver.url + "/flaky")
    await harness.publish(note)

    async def attempts() -> list[DeliveryAttemptRecord] | None:
        found = []
        for partition in range(await harness.log.partitions(DELIVERIES)):
            for record in await harness.log.read(DELIVERIES, partition, offset=0):
                found.append(DeliveryAttemptRecord.model_validate_json(record.value))
        return found if any(a.outcome == "success" for a in found) else None

    recorded = sorted(await eventually(attempts, "a successful attempt recorded"), key=_n)
    assert [(a.attempt, a.outcome, a.status) for a in recorded] == [
        (1, "retry", 500),
        (2, "retry", 500),
        (3, "success", 200),
    ]
    assert all(a.notification_id == note.notification_id for a in recorded)
    assert all(a.event_number == 1 and a.channel == "rest-hook" for a in recorded)
    assert recorded[0].response_excerpt == "answer 1"
    assert recorded[-1].response_excerpt == "answer 3"
    assert recorded[-1].key == f"{PROJECT}/s1"


def _n(attempt: DeliveryAttemptRecord) -> int:
    return attempt.attempt
