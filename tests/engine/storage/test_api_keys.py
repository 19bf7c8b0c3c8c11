"""API keys in the datastore (both engines): scope, revocation seen by the authenticating read,
last-used times written at most once per interval, projects listed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhirbots.engine.storage.port import Storage


async def test_a_key_keeps_its_scope_and_is_listed_without_its_hash(storage: Storage) -> None:
    await storage.ensure_project("p1", "One")
    await storage.ensure_project("p2", "Two")
    scoped = await storage.add_api_key(
        "p1", "hash-s", name="reader", scope='{"interactions":["read"]}'
    )
    plain = await storage.add_api_key("p2", "hash-p", name="plain")
    found = await storage.find_api_key("hash-s")
    assert found is not None and found.scope == '{"interactions":["read"]}'
    assert found.last_used is None and found.revoked is None
    assert [k.id for k in await storage.list_api_keys("p1")] == [scoped.id]
    everything = await storage.list_api_keys()
    assert {k.id for k in everything} >= {scoped.id, plain.id}
    assert all(not hasattr(k, "key_hash") for k in everything)
    projects = {(p.id, p.name) for p in await storage.list_projects()}
    assert projects >= {("p1", "One"), ("p2", "Two")}


async def test_a_revoked_key_is_not_found_by_its_hash(storage: Storage) -> None:
    await storage.ensure_project("p1", "One")
    record = await storage.add_api_key("p1", "hash-r", name="r")
    assert await storage.revoke_api_key(record.id)
    assert await storage.find_api_key("hash-r") is None
    assert not await storage.revoke_api_key(record.id)  # once is enough
    kept = await storage.get_api_key(record.id)
    assert kept is not None and kept.revoked is not None
    assert await storage.get_api_key("no-such-key") is None


async def test_last_used_is_written_at_most_once_per_interval(storage: Storage) -> None:
    await storage.ensure_project("p1", "One")
    record = await storage.add_api_key("p1", "hash-t", name="t")
    first = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    minute = timedelta(minutes=1)
    await storage.touch_api_key(record.id, first, first - minute)
    # Another process, 10 s later: a time within the interval is already stored.
    await storage.touch_api_key(
        record.id, first + timedelta(seconds=10), first - timedelta(seconds=50)
    )
    touched = await storage.get_api_key(record.id)
    assert touched is not None and touched.last_used == first
    later = first + timedelta(minutes=2)
    await storage.touch_api_key(record.id, later, later - minute)
    touched = await storage.get_api_key(record.id)
    assert touched is not None and touched.last_used == later
