"""A datastore whose database fails for real, and every call of the storage port to try on it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import asyncpg

from fhirbots.engine.errors import DatastoreUnavailable
from fhirbots.engine.storage.model import CreateOp, WriteContext
from fhirbots.engine.storage.port import Storage
from fhirbots.subscriptions.search import parse_search
from tests.conftest import PG_DSN_ENV
from tests.waiting import eventually

CTX = WriteContext(author="ApiKey/k1")


@contextlib.asynccontextmanager
async def postgres_down(dsn: str) -> AsyncIterator[None]:
    """Inside the block the database of ``dsn`` refuses new connections and the server has
    ended every connection it had, as when it restarts; afterwards it accepts them again.

    ``dsn`` must name one of this session's databases (``postgres_dsn()``), never the server's
    base database: the statements go through a connection to that one, since PostgreSQL does
    not let a session bar connections to its own database.
    """
    database = urlsplit(dsn).path.lstrip("/")
    admin = await asyncpg.connect(os.environ[PG_DSN_ENV])
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
        )

        async def all_ended() -> bool:
            left = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
            )
            return bool(left == 0)

        await eventually(all_ended, f"the connections to {database} to end")
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()


def every_call(storage: Storage, resource_id: str) -> dict[str, Callable[[], Awaitable[object]]]:
    """Each method of the port that reaches the database, called on project ``p1``."""
    query = parse_search("Patient?family=A").query
    return {
        "apply": lambda: storage.apply(
            "p1", [CreateOp({"resourceType": "Patient", "name": [{"family": "A"}]})], CTX
        ),
        "read": lambda: storage.read("p1", "Patient", resource_id),
        "vread": lambda: storage.vread("p1", "Patient", resource_id, 1),
        "history": lambda: storage.history("p1", "Patient", resource_id),
        "count_by_type": lambda: storage.count_by_type("p1"),
        "current_resources": lambda: storage.current_resources("p1", "Patient"),
        "current_by_ids": lambda: storage.current_by_ids("p1", "Patient", [resource_id]),
        "current_ids_everywhere": lambda: storage.current_ids_everywhere("Patient"),
        "search": lambda: storage.search("p1", query),
        "search_count": lambda: storage.search_count("p1", query),
        "include_targets": lambda: storage.include_targets(
            "p1", "Observation", ["subject"], ["o1"]
        ),
        "revinclude_sources": lambda: storage.revinclude_sources(
            "p1", "Observation", ["subject"], [("Patient", resource_id)]
        ),
        "ensure_project": lambda: storage.ensure_project("p2", "Project two"),
        "add_api_key": lambda: storage.add_api_key("p1", "0" * 64, name="second"),
        "find_api_key": lambda: storage.find_api_key("0" * 64),
        "outbox_pending": lambda: storage.outbox_pending(10),
        "outbox_mark_published": lambda: storage.outbox_mark_published([1]),
        "outbox_purge": lambda: storage.outbox_purge(datetime.now(UTC)),
    }


async def untranslated(
    calls: dict[str, Callable[[], Awaitable[object]]], driver_errors: tuple[type[Exception], ...]
) -> dict[str, str]:
    """The calls that did not raise :class:`DatastoreUnavailable` caused by one of
    ``driver_errors``, each with what it did instead (empty when all did)."""
    wrong: dict[str, str] = {}
    for name, call in calls.items():
        try:
            await call()
        except DatastoreUnavailable as exc:
            if not isinstance(exc.__cause__, driver_errors):
                wrong[name] = f"caused by {exc.__cause__!r}"
        except Exception as exc:
            wrong[name] = f"raised {exc!r}"
        else:
            wrong[name] = "succeeded"
    return wrong
