"""The dashboard's readers of the event log (the live tail, the event browser) on both
adapters: the embedded log and a real Kafka broker, through the port alone."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from fhirbots.engine.dashboard.event_scan import EventQuery, browse, one_record
from fhirbots.engine.dashboard.tail import Tailer, TailFilter
from fhirbots.engine.eventlog.port import EventLog, OutgoingMessage
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.topics import BOT_EXECUTIONS, CHANGES, DELIVERIES, NOTIFICATIONS
from tests.waiting import eventually

pytestmark = pytest.mark.integration

WAIT_SECONDS = 90.0
"""A Kafka broker shared by the session may be slow to answer its first metadata requests."""


def change(project: str, resource_id: str) -> OutgoingMessage:
    event = ChangeEvent(
        event_id=str(uuid.uuid4()),
        project=project,
        interaction="create",
        resource_type="Basic",
        resource_id=resource_id,
        version_id="1",
        time=datetime.now(UTC),
    )
    return OutgoingMessage(event.key, event.model_dump_json().encode())


async def test_the_tail_follows_the_topics_from_their_end(
    event_log: EventLog, unique: Callable[[str], str]
) -> None:
    for topic in (CHANGES, NOTIFICATIONS, DELIVERIES, BOT_EXECUTIONS):
        await event_log.create_topic(topic)
    project, other = unique("tail"), unique("other")
    await event_log.publish_many(CHANGES, [change(project, "before")])
    tailer = Tailer(lambda: event_log, poll_interval=0.05)
    client = await tailer.subscribe(project, TailFilter())
    try:
        await event_log.publish_many(CHANGES, [change(other, "theirs"), change(project, "after")])

        async def first() -> dict[str, Any] | None:
            return await client.queue.get()

        event = await eventually(
            first, "the change published after the tail began", within=WAIT_SECONDS
        )
        assert event["project"] == project and event["resource_id"] == "after"
        assert client.queue.empty()  # the other project's record is not ours
    finally:
        await tailer.stop()


async def test_the_browser_pages_newest_first_and_opens_a_record(
    event_log: EventLog, unique: Callable[[str], str]
) -> None:
    await event_log.create_topic(CHANGES)
    project, other = unique("browse"), unique("other")
    ids = [f"b{n}" for n in range(5)]
    for resource_id in ids:
        await event_log.publish_many(CHANGES, [change(project, resource_id)])
    await event_log.publish_many(CHANGES, [change(other, "theirs")])
    seen: list[str] = []
    stamps: list[datetime] = []
    query = EventQuery(key=project, limit=2)
    for _ in range(50):
        page = await browse(event_log, project, query)
        seen.extend(r.key.rsplit("/", 1)[1] for r in page.records)
        stamps.extend(r.timestamp for r in page.records)
        if page.cursor is None:
            break
        query = EventQuery(key=project, limit=2, cursor=page.cursor)
    assert sorted(seen) == ids
    assert stamps == sorted(stamps, reverse=True)  # across partitions, by the log's time
    newest = (await browse(event_log, project, EventQuery(key=project, limit=1))).records[0]
    assert newest.timestamp == max(stamps)
    opened = await one_record(event_log, project, CHANGES, newest.partition, newest.offset)
    assert opened.value == newest.value
