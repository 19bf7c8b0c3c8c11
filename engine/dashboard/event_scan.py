"""Reading the engine's topics for the event browser: what one request scans, how it filters,
and where the next page goes on.

Through the event-log port alone, so alike on the embedded log and on Kafka. A page is read
newest first (from the end of every partition, merged by time), or oldest first from an offset
of one partition or from a time. Searches filter what is read (key substring, a header, a JSON
field path); every request reads at most :data:`SCAN_LIMIT` records and says how many it
scanned, with a :class:`Cursor` to go on.

Only records of the caller's project are returned: the key must start with ``project/`` and a
payload that names a project must name that one (a dead-letter record whose payload cannot be
decoded is returned when its key is in the project).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from fhirbots.engine.errors import BadRequest, NotFound
from fhirbots.engine.eventlog.errors import TopicNotFound
from fhirbots.engine.eventlog.port import EventLog, Record
from fhirbots.schemas.topics import (
    BOT_EXECUTIONS,
    CHANGES,
    DELIVERIES,
    NOTIFICATIONS,
    deadletter_topic,
)

__all__ = [
    "BROWSABLE",
    "DEFAULT_LIMIT",
    "KINDS",
    "MAX_LIMIT",
    "SCAN_LIMIT",
    "Cursor",
    "EventQuery",
    "EventsPage",
    "browse",
    "in_project",
    "json_of",
    "one_record",
]

KINDS: dict[str, str] = {
    CHANGES: "change",
    NOTIFICATIONS: "notification",
    DELIVERIES: "delivery",
    BOT_EXECUTIONS: "execution",
}
"""Topic -> the kind of step its records are (as the trace index and the live tail name them)."""

BROWSABLE: tuple[str, ...] = (*KINDS, *(deadletter_topic(t) for t in KINDS))
"""Topics the browser reads: the four the dashboard follows and their dead-letter twins."""

DEFAULT_LIMIT = 50
"""Records shown per page unless asked otherwise."""

MAX_LIMIT = 200
"""Most records one page returns: more does not fit a browser table."""

SCAN_LIMIT = 250
"""Most records one request reads (matching or not). It bounds what a search costs the API
process whatever the topic's size: at 1,000 change events/s a search answers with p99 under
100 ms (bench/dashboard.py), and says where to go on; the page asks for the next stretch."""

_CHUNK = 100
"""Records read from one partition at a time: a page of a quiet search needs a few reads per
partition; on Kafka each read is a round trip of its own."""

Order = Literal["newest", "oldest"]


def json_of(value: bytes) -> Any:
    """A record's value parsed as JSON, or None when it is not JSON."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


_UNPARSED: Any = object()
"""Marks a payload not parsed yet (None is a parsed value: not JSON)."""


def in_project(record: Record, project: str, payload: Any = _UNPARSED) -> bool:
    """Whether ``record`` belongs to ``project``: its key, and its payload when that names one
    (``payload``: the value already parsed, if the caller has it)."""
    if not record.key.startswith(f"{project}/"):
        return False
    if payload is _UNPARSED:
        payload = json_of(record.value)
    if isinstance(payload, dict) and "project" in payload:
        return bool(payload["project"] == project)
    return True


# -- filters and cursors ---------------------------------------------------------------------


def _path_values(value: Any, path: list[str]) -> Iterator[Any]:
    """Every value at ``path`` in ``value``, walking into each element of a list on the way."""
    if isinstance(value, list):
        for item in value:
            yield from _path_values(item, path)
        return
    if not path:
        yield value
        return
    if isinstance(value, dict) and path[0] in value:
        yield from _path_values(value[path[0]], path[1:])


def _same(found: Any, wanted: str) -> bool:
    if isinstance(found, str):
        return found == wanted
    if found is None or isinstance(found, dict | list):
        return False
    return json.dumps(found) == wanted or str(found) == wanted


@dataclass(frozen=True)
class Cursor:
    """Where a page stopped: the order, and per partition the next position to read.

    Newest first, a position is the offset *below* which to go on; oldest first, the next
    offset to read. Partitions read to their end are left out.
    """

    topic: str
    order: Order
    positions: dict[int, int]

    def encode(self) -> str:
        """The opaque text a client passes back as ``cursor``."""
        text = json.dumps(
            {"t": self.topic, "o": self.order, "p": {str(k): v for k, v in self.positions.items()}}
        )
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Read a cursor a page returned.

        Raises:
            BadRequest: It is not one.
        """
        try:
            raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            order = raw["o"]
            if order not in ("newest", "oldest"):
                raise ValueError(order)
            positions = {int(k): int(v) for k, v in raw["p"].items()}
            return cls(str(raw["t"]), order, positions)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise BadRequest("cursor: not a cursor this browser returned") from exc


@dataclass(frozen=True)
class EventQuery:
    """What to read and what to look for (see :func:`EventQuery.parse` for the parameters).

    Attributes:
        topic: The topic.
        partition: One partition, or None for all.
        offset: Read oldest first from this offset (of ``partition``).
        since: Read oldest first from this time.
        key: Substring of the key (case-insensitive).
        header: (name, value) of a header; value None: the header is there.
        field: (path, value) in the JSON payload; value None: the path has a value.
        limit: Most records returned.
        cursor: Go on where a page stopped.
    """

    topic: str = CHANGES
    partition: int | None = None
    offset: int | None = None
    since: datetime | None = None
    key: str | None = None
    header: tuple[str, str | None] | None = None
    field: tuple[tuple[str, ...], str | None] | None = None
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> EventQuery:
        """From ``topic, partition, offset, since, key, header, field, limit, cursor``.

        Raises:
            BadRequest: A parameter is malformed.
        """
        topic = query.get("topic") or CHANGES
        if topic not in BROWSABLE:
            raise BadRequest(f"topic must be one of {', '.join(BROWSABLE)}")
        partition = _integer(query, "partition")
        offset = _integer(query, "offset")
        if offset is not None and partition is None:
            raise BadRequest("offset: name the partition too")
        since = None
        if query.get("since"):
            try:
                since = datetime.fromisoformat(query["since"].replace("Z", "+00:00"))
            except ValueError as exc:
                raise BadRequest("since: expected an ISO 8601 date-time") from exc
            if since.tzinfo is None:
                since = since.replace(tzinfo=UTC)
        header = None
        if query.get("header"):
            name, sep, value = query["header"].partition("=")
            header = (name.strip(), value if sep else None)
        found = None
        if query.get("field"):
            path, sep, value = query["field"].partition("=")
            steps = tuple(s for s in path.strip().split(".") if s)
            if not steps:
                raise BadRequest("field: expected path=value, e.g. resource.code.coding.code=x")
            found = (steps, value if sep else None)
        limit = _integer(query, "limit")
        cursor = Cursor.decode(query["cursor"]) if query.get("cursor") else None
        if cursor is not None and cursor.topic != topic:
            raise BadRequest("cursor: it belongs to another topic")
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            since=since,
            key=query.get("key") or None,
            header=header,
            field=found,
            limit=min(max(limit or DEFAULT_LIMIT, 1), MAX_LIMIT),
            cursor=cursor,
        )

    def matches(self, record: Record, payload: Any = _UNPARSED) -> bool:
        """Whether ``record`` passes the key, header and field filters (``payload``: its value
        already parsed, if the caller has it)."""
        if self.key is not None and self.key.lower() not in record.key.lower():
            return False
        if self.header is not None:
            name, value = self.header
            values = [v for k, v in record.headers if k.lower() == name.lower()]
            if not values:
                return False
            if value is not None and value not in (v.decode("utf-8", "replace") for v in values):
                return False
        if self.field is not None:
            path, wanted = self.field
            value = json_of(record.value) if payload is _UNPARSED else payload
            found = [v for v in _path_values(value, list(path)) if v is not None]
            if not found:
                return False
            if wanted is not None and not any(_same(v, wanted) for v in found):
                return False
        return True


def _integer(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if not text:
        return None
    try:
        value = int(text)
    except ValueError as exc:
        raise BadRequest(f"{name}: expected a whole number") from exc
    if value < 0:
        raise BadRequest(f"{name}: expected zero or more")
    return value


# -- reading ---------------------------------------------------------------------------------


@dataclass
class _Lane:
    """One partition being read in one direction, a chunk at a time."""

    log: EventLog
    topic: str
    partition: int
    order: Order
    position: int
    """Newest first: read below this offset; oldest first: the next offset to read."""
    since: datetime | None = None
    end: int = 0
    """Oldest first: the partition's end when the request began."""
    buffer: list[Record] = field(default_factory=list)
    done: bool = False
    chunk: int = _CHUNK
    """Records the next read asks for: small at first (a page across eight partitions needs a
    few from each), doubling while the lane keeps being drained."""

    async def head(self) -> Record | None:
        """The next record in this lane's order, reading another chunk when needed."""
        if not self.buffer and not self.done:
            await self._fill()
        return self.buffer[0] if self.buffer else None

    def take(self) -> Record:
        """Move past the head."""
        record = self.buffer.pop(0)
        self.position = record.offset if self.order == "newest" else record.offset + 1
        return record

    async def _fill(self) -> None:
        chunk, self.chunk = self.chunk, min(self.chunk * 2, _CHUNK)
        if self.order == "newest":
            start = max(self.position - chunk, 0)
            records = await self.log.read(self.topic, self.partition, offset=start, limit=chunk)
            # Retention trims a partition from its oldest end, so nothing below the range
            # read exists when nothing in it does.
            below = [r for r in records if r.offset < self.position]
            self.buffer = below[::-1]
            self.done = not below
            return
        if self.since is not None:
            records = await self.log.read(self.topic, self.partition, since=self.since, limit=chunk)
            self.since = None
        else:
            records = await self.log.read(
                self.topic, self.partition, offset=self.position, limit=chunk
            )
        self.buffer = [r for r in records if r.offset >= self.position]
        if not self.buffer:
            self.done = True
            self.position = max(self.position, self.end)


@dataclass(frozen=True)
class EventsPage:
    """One page of the browser.

    Attributes:
        records: The matching records, in the page's order.
        scanned: Records read and looked at to find them.
        order: ``newest`` or ``oldest`` first.
        cursor: Where to go on, or None when every partition was read to its end.
        exhausted_scan: Whether the scan stopped at :data:`SCAN_LIMIT` (more may match).
    """

    records: list[Record]
    scanned: int
    order: Order
    cursor: Cursor | None
    exhausted_scan: bool


async def _lanes(log: EventLog, query: EventQuery) -> list[_Lane]:
    try:
        count = await log.partitions(query.topic)
    except TopicNotFound:
        return []  # nothing was ever published to it
    if query.partition is not None and query.partition >= count:
        raise BadRequest(f"partition: {query.topic} has partitions 0 to {count - 1}")
    chosen = [query.partition] if query.partition is not None else list(range(count))
    # Twice a page's fair share of each partition, at least a few records.
    chunk = min(max(-(-2 * query.limit // len(chosen)), 8), _CHUNK)
    if query.cursor is not None:
        return [
            _Lane(log, query.topic, p, query.cursor.order, pos, chunk=chunk)
            for p, pos in sorted(query.cursor.positions.items())
            if p < count and (query.partition is None or p == query.partition)
        ]
    ends = await log.end_offsets(query.topic)
    if query.offset is not None:
        return [
            _Lane(log, query.topic, p, "oldest", query.offset, end=ends.get(p, 0), chunk=chunk)
            for p in chosen
        ]
    if query.since is not None:
        return [
            _Lane(
                log,
                query.topic,
                p,
                "oldest",
                0,
                since=query.since,
                end=ends.get(p, 0),
                chunk=chunk,
            )
            for p in chosen
        ]
    return [_Lane(log, query.topic, p, "newest", ends.get(p, 0), chunk=chunk) for p in chosen]


def _later(a: Record, b: Record) -> bool:
    return (a.timestamp, a.partition, a.offset) > (b.timestamp, b.partition, b.offset)


async def browse(log: EventLog, project: str, query: EventQuery) -> EventsPage:
    """A page of ``query.topic``'s records of ``project`` that match ``query``.

    Partitions are merged by time: newest first from their ends, or oldest first from an
    offset or a time. At most :data:`SCAN_LIMIT` records are looked at.
    """
    lanes = await _lanes(log, query)
    order: Order = (
        lanes[0].order if lanes else ("oldest" if query.since or query.offset else "newest")
    )
    found: list[Record] = []
    scanned = 0
    while len(found) < query.limit and scanned < SCAN_LIMIT:
        best: _Lane | None = None
        best_head: Record | None = None
        for lane in lanes:
            head = await lane.head()
            if head is None:
                continue
            if best_head is None or (_later(head, best_head) == (order == "newest")):
                best, best_head = lane, head
        if best is None:
            break
        record = best.take()
        scanned += 1
        if not record.key.startswith(f"{project}/"):
            continue  # not parsed at all: most records of a busy log are another project's
        payload = json_of(record.value)
        if in_project(record, project, payload) and query.matches(record, payload):
            found.append(record)
    open_lanes = {lane.partition: lane.position for lane in lanes if lane.buffer or not lane.done}
    if order == "oldest":
        # Oldest first, the end is only where the log is now: a later page may find more.
        open_lanes = {lane.partition: lane.position for lane in lanes} if open_lanes else {}
    cursor = Cursor(query.topic, order, open_lanes) if open_lanes else None
    return EventsPage(found, scanned, order, cursor, scanned >= SCAN_LIMIT)


async def one_record(
    log: EventLog, project: str, topic: str, partition: int, offset: int
) -> Record:
    """One record of ``project``.

    Raises:
        BadRequest: Not a topic of the browser.
        NotFound: No such record, or not the caller's.
    """
    if topic not in BROWSABLE:
        raise BadRequest(f"topic must be one of {', '.join(BROWSABLE)}")
    try:
        count = await log.partitions(topic)
    except TopicNotFound as exc:
        raise NotFound(f"{topic} has no records yet") from exc
    if partition >= count:
        raise NotFound(f"{topic} has no partition {partition}")
    records = await log.read(topic, partition, offset=offset, limit=1)
    if not records or records[0].offset != offset or not in_project(records[0], project):
        raise NotFound(f"no record {topic}/{partition}/{offset} in this project")
    return records[0]
