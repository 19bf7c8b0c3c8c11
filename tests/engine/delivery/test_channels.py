"""Channel rules: deliverable endpoints, allowed headers, message topics per project."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbots.engine.delivery.channels import (
    PROJECT_TOPIC_PREFIX,
    ChannelRules,
    allowed_header_lines,
    header_problem,
    message_topic,
    topic_problem,
)
from fhirbots.engine.delivery.safety import EndpointGuard
from fhirbots.engine.errors import Unprocessable
from fhirbots.schemas.topics import (
    BOT_EXECUTIONS,
    CHANGES,
    DELIVERIES,
    NOTIFICATIONS,
    SUPPRESSED,
    deadletter_topic,
)

RULES = ChannelRules(EndpointGuard.from_cidrs(["127.0.0.1/32"]))


def _subscription(channel: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Subscription", "criteria": "Patient?", "channel": channel}


async def _refused(channel: dict[str, Any], where: str) -> str:
    with pytest.raises(Unprocessable) as caught:
        await RULES.check("p1", _subscription(channel))
    assert caught.value.issues[0].expression == (where,)
    return caught.value.message


@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [
        ("rest-hook", "file:///etc/passwd"),
        ("rest-hook", "ftp://example.org/x"),
        ("rest-hook", "gopher://example.org:70/_x"),
        ("rest-hook", "dict://example.org:11211/stat"),
        ("rest-hook", "ldap://example.org/"),
        ("rest-hook", "javascript:alert(1)"),
        ("rest-hook", "data:text/plain,x"),
        ("rest-hook", "ws://example.org/x"),
        ("rest-hook", "example.org/hook"),
        ("rest-hook", "http:///nohost"),
        ("rest-hook", "http://2130706433/x"),
        ("rest-hook", "http://0x7f.1/x"),
        ("websocket", "file:///tmp/x"),
        ("websocket", "https://example.org/x"),
        ("email", "http://example.org/"),
        ("message", "fhir.changes.v1"),
        ("message", "has space"),
        ("message", ""),
    ],
)
async def test_undeliverable_endpoints_are_refused(kind: str, endpoint: str) -> None:
    await _refused({"type": kind, "endpoint": endpoint}, "Subscription.channel.endpoint")


@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [
        ("rest-hook", "https://hooks.example.org/fhir"),
        ("rest-hook", "http://127.0.0.1:9000/hook"),  # the allowed network
        ("rest-hook", "Bot/triage"),
        ("websocket", None),
        ("websocket", "wss://example.org/ws"),
        ("message", "acme.lab-results.v1"),
        ("email", "mailto:ops@example.org"),
    ],
)
async def test_deliverable_endpoints_pass(kind: str, endpoint: str | None) -> None:
    channel: dict[str, Any] = {"type": kind}
    if endpoint is not None:
        channel["endpoint"] = endpoint
    await RULES.check("p1", _subscription(channel))


async def test_rest_hook_and_message_need_an_endpoint() -> None:
    for kind in ("rest-hook", "message"):
        await _refused({"type": kind}, "Subscription.channel.endpoint")


@pytest.mark.parametrize(
    "line",
    [
        "Host: internal.example",
        "host:x",
        "Content-Length: 0",
        "Transfer-Encoding: chunked",
        "Connection: close",
        "Keep-Alive: 5",
        "Upgrade: websocket",
        "TE: trailers",
        "Trailer: X",
        "Expect: 100-continue",
        "Proxy-Authorization: Basic x",
        "Proxy-Anything: x",
        "Content-Type: text/plain",
        "X-Signature: forged",
        "x-signature: forged",
        "X-Event-Number: 1",
        "X-Subscription-Id: other",
        "X-Notification-Id: n",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate: a=b",
        "Authorization: Bearer x\r\nHost: evil",
        "X-Ok: a\nb",
        "No colon here",
        ": empty name",
        "Bad Name: x",
        "X" * 5000 + ": y",
        42,
    ],
)
async def test_forbidden_headers_are_refused(line: Any) -> None:
    assert header_problem(line) is not None
    channel = {"type": "rest-hook", "endpoint": "https://example.org/h", "header": ["A: b", line]}
    await _refused(channel, "Subscription.channel.header[1]")


def test_allowed_headers_pass_and_the_sender_drops_the_others() -> None:
    lines = ("Authorization: Bearer abc", "X-Tenant: 7", "Host: evil", "X-Signature: f")
    assert allowed_header_lines(lines) == ("Authorization: Bearer abc", "X-Tenant: 7")


@pytest.mark.parametrize(
    "name",
    [
        CHANGES,
        NOTIFICATIONS,
        SUPPRESSED,
        DELIVERIES,
        BOT_EXECUTIONS,
        "fhir.changes.v1.deadletter",
        "FHIR.changes.v1",
        "bots.anything",
        "project.other.lab",
        "__consumer_offsets",
        "_schemas",
        "a" * 201,
        "a/b",
        "",
    ],
)
def test_reserved_and_malformed_topics_are_refused(name: str) -> None:
    assert topic_problem("p1", name) is not None


def test_topics_are_namespaced_per_project_without_collisions() -> None:
    assert message_topic("p1", "lab.v1") == "project.p1.lab.v1"
    names = {
        message_topic(project, name)
        for project, name in [("a", "b.c"), ("a.b", "c"), ("a_b", "c"), ("a", "b_c"), ("A", "b.c")]
    }
    assert len(names) == 5
    for project in ("a.b", "ü", "a b", "fhir"):
        assert message_topic(project, "x").startswith("project.")


def test_no_engine_topic_lies_in_a_project_namespace() -> None:
    engine_topics = [CHANGES, NOTIFICATIONS, SUPPRESSED, DELIVERIES, BOT_EXECUTIONS]
    for topic in engine_topics + [deadletter_topic(t) for t in engine_topics]:
        assert not topic.startswith(PROJECT_TOPIC_PREFIX), topic
        assert topic_problem("p1", topic) is not None
