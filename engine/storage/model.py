"""Plain values the storage port takes and returns."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from fhirbots.engine.errors import DeadlinePassed
from fhirbots.schemas.events import CausationLink, ChangeEvent

__all__ = [
    "ApiKeyRecord",
    "CreateOp",
    "DeleteOp",
    "HistoryPage",
    "IndexOwner",
    "OutboxRow",
    "ProjectRecord",
    "SearchPage",
    "StoredResource",
    "UpdateOp",
    "WriteContext",
    "WriteOp",
    "WriteResult",
]


@dataclass(frozen=True)
class StoredResource:
    """One version of a resource; ``content`` is None for a deletion tombstone."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: dict[str, Any] | None

    @property
    def method(self) -> str:
        """The HTTP method that made this version, as a history Bundle reports it."""
        if self.deleted:
            return "DELETE"
        return "POST" if self.version_id == 1 else "PUT"


class SearchPage(list[StoredResource]):
    """A page of search matches that may end before its ``count``: ``truncated`` when the
    datastore stopped at a byte bound, so more matches may follow."""

    def __init__(self) -> None:
        super().__init__()
        self.truncated = False
        self.size = 0
        """Bytes of the rows' stored JSON."""

    def take(self, row: StoredResource, size: int, max_bytes: int) -> bool:
        """Append ``row`` (``size`` bytes as stored); True, and :attr:`truncated`, once the
        page holds more than ``max_bytes``."""
        self.append(row)
        self.size += size
        self.truncated = self.size > max_bytes
        return self.truncated


@dataclass(frozen=True)
class WriteContext:
    """Who writes, and why: copied into every change event the write produces."""

    author: str | None = None
    traceparent: str | None = None
    causation: tuple[CausationLink, ...] = ()
    deadline: float | None = None
    """``time.monotonic()`` after which the write must not commit (a bot execution's timeout;
    the clock is the host's, so the SQLite writer process reads the same one)."""

    def check_deadline(self) -> None:
        """Raise :class:`DeadlinePassed` once :attr:`deadline` is over; the storage calls it
        inside the write's transaction, before committing, so the write rolls back."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlinePassed("the write's deadline (its bot execution's timeout) passed")


@dataclass(frozen=True)
class CreateOp:
    """Create a resource under a new id (server-assigned unless ``id`` is given)."""

    resource: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class UpdateOp:
    """Update (or create, when it does not exist) the resource ``resource_type/id``."""

    resource_type: str
    id: str
    resource: dict[str, Any]
    if_match: int | None = None


@dataclass(frozen=True)
class DeleteOp:
    """Delete ``resource_type/id``; deleting a missing or deleted resource changes nothing."""

    resource_type: str
    id: str
    if_match: int | None = None


WriteOp = CreateOp | UpdateOp | DeleteOp


@dataclass(frozen=True)
class WriteResult:
    """The outcome of one write: the stored version and the event it produced.

    ``stored`` is None when a delete found nothing to delete; ``event`` is None when nothing
    changed.
    """

    stored: StoredResource | None
    event: ChangeEvent | None
    created: bool = False


@dataclass(frozen=True)
class HistoryPage:
    """A page of history, newest first, and the number of versions in all pages."""

    entries: list[StoredResource]
    total: int


@dataclass(frozen=True)
class OutboxRow:
    """A committed change event waiting to be published."""

    seq: int
    key: str
    payload: bytes


@dataclass(frozen=True)
class ApiKeyRecord:
    """An API key as stored: only the hash of the secret is kept."""

    id: str
    project: str
    name: str
    admin: bool
    created: datetime = field(compare=False)
    scope: str | None = field(default=None, compare=False)
    """What the key may do inside its project, as JSON (``fhirbots.engine.web.auth.KeyScope``);
    None: everything."""
    last_used: datetime | None = field(default=None, compare=False)
    """When it last authenticated a request (kept to the minute)."""
    revoked: datetime | None = field(default=None, compare=False)
    """When it was revoked; a revoked key authenticates nothing."""


@dataclass(frozen=True)
class ProjectRecord:
    """A project: its id, name and creation time."""

    id: str
    name: str
    created: datetime


class IndexOwner(NamedTuple):
    """Whose search index rows: the integer keys of the resource and of its project, and the
    resource's type (the columns every index row starts with)."""

    resource: int
    project: int
    resource_type: str
