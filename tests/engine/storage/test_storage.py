"""One contract suite for both storage adapters (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import orjson
import pytest

from fhirbots.engine.errors import PreconditionFailed
from fhirbots.engine.storage.model import (
    CreateOp,
    DeleteOp,
    SearchPage,
    UpdateOp,
    WriteContext,
)
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.events import CausationLink, ChangeEvent
from fhirbots.subscriptions.search import SearchError, parse_search

CTX = WriteContext(author="ApiKey/k1", traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")


def patient(family: str) -> dict[str, object]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


async def test_create_assigns_id_version_and_meta(storage: Storage) -> None:
    [result] = await storage.apply("p1", [CreateOp(patient("Chalmers"))], CTX)
    stored = result.stored
    assert stored is not None and result.created
    assert stored.version_id == 1
    assert stored.content is not None
    assert stored.content["id"] == stored.id
    assert stored.content["meta"]["versionId"] == "1"
    read = await storage.read("p1", "Patient", stored.id)
    assert read is not None and read.content == stored.content


async def test_update_keeps_history_and_events_carry_previous(storage: Storage) -> None:
    [created] = await storage.apply("p1", [CreateOp(patient("A"))], CTX)
    assert created.stored is not None
    pid = created.stored.id
    [updated] = await storage.apply("p1", [UpdateOp("Patient", pid, patient("B"))], CTX)
    assert updated.stored is not None and updated.stored.version_id == 2
    assert updated.event is not None
    assert updated.event.interaction == "update"
    assert updated.event.previous is not None
    assert updated.event.previous["name"][0]["family"] == "A"
    v1 = await storage.vread("p1", "Patient", pid, 1)
    assert v1 is not None and v1.content is not None and v1.content["name"][0]["family"] == "A"
    page = await storage.history("p1", "Patient", pid)
    assert [e.version_id for e in page.entries] == [2, 1]
    assert page.total == 2


async def test_update_as_create_with_client_id(storage: Storage) -> None:
    [result] = await storage.apply("p1", [UpdateOp("Patient", "client-1", patient("C"))], CTX)
    assert result.created and result.stored is not None and result.stored.id == "client-1"
    assert result.event is not None and result.event.interaction == "create"


async def test_if_match_conflict_changes_nothing(storage: Storage) -> None:
    await storage.apply("p1", [UpdateOp("Patient", "x", patient("A"))], CTX)
    with pytest.raises(PreconditionFailed):
        await storage.apply("p1", [UpdateOp("Patient", "x", patient("B"), if_match=7)], CTX)
    current = await storage.read("p1", "Patient", "x")
    assert current is not None and current.version_id == 1
    assert len(await storage.outbox_pending(100)) == 1


async def test_delete_leaves_tombstone_and_event(storage: Storage) -> None:
    await storage.apply("p1", [UpdateOp("Patient", "d", patient("A"))], CTX)
    [deleted] = await storage.apply("p1", [DeleteOp("Patient", "d")], CTX)
    assert deleted.event is not None and deleted.event.interaction == "delete"
    assert deleted.event.resource is None and deleted.event.previous is not None
    current = await storage.read("p1", "Patient", "d")
    assert current is not None and current.deleted and current.version_id == 2
    [again] = await storage.apply("p1", [DeleteOp("Patient", "d")], CTX)
    assert again.event is None
    [missing] = await storage.apply("p1", [DeleteOp("Patient", "never")], CTX)
    assert missing.event is None and missing.stored is None
    page = await storage.history("p1", "Patient", "d")
    assert [e.method for e in page.entries] == ["DELETE", "POST"]


async def test_apply_is_atomic(storage: Storage) -> None:
    await storage.apply("p1", [UpdateOp("Patient", "a", patient("A"))], CTX)
    ops = [
        UpdateOp("Patient", "b", patient("B")),
        UpdateOp("Patient", "a", patient("A2"), if_match=99),
    ]
    with pytest.raises(PreconditionFailed):
        await storage.apply("p1", ops, CTX)
    assert await storage.read("p1", "Patient", "b") is None
    assert len(await storage.outbox_pending(100)) == 1


async def test_projects_are_isolated(storage: Storage) -> None:
    await storage.apply("p1", [UpdateOp("Patient", "same", patient("One"))], CTX)
    assert await storage.read("p2", "Patient", "same") is None
    assert (await storage.history("p2")).total == 0
    assert await storage.count_by_type("p1") == {"Patient": 1}
    assert await storage.count_by_type("p2") == {}


async def test_outbox_holds_events_in_commit_order(storage: Storage) -> None:
    link = CausationLink(bot="Bot/b1", execution="e1")
    ctx = WriteContext(author="ApiKey/k", traceparent=CTX.traceparent, causation=(link,))
    for family in ("A", "B", "C"):
        await storage.apply("p1", [UpdateOp("Patient", "o", patient(family))], ctx)
    rows = await storage.outbox_pending(10)
    events = [ChangeEvent.model_validate(orjson.loads(r.payload)) for r in rows]
    assert [e.version_id for e in events] == ["1", "2", "3"]
    assert all(r.key == "p1/Patient/o" for r in rows)
    assert events[0].causation == (link,)
    assert events[2].traceparent == CTX.traceparent and events[2].author == "ApiKey/k"
    await storage.outbox_mark_published([rows[0].seq])
    assert [r.seq for r in await storage.outbox_pending(10)] == [r.seq for r in rows[1:]]


async def test_concurrent_updates_of_one_resource_serialise(storage: Storage) -> None:
    await storage.apply("p1", [UpdateOp("Patient", "c", patient("0"))], CTX)
    await asyncio.gather(
        *(storage.apply("p1", [UpdateOp("Patient", "c", patient(str(i)))], CTX) for i in range(20))
    )
    page = await storage.history("p1", "Patient", "c", count=100)
    assert sorted(e.version_id for e in page.entries) == list(range(1, 22))
    times = [e.last_updated for e in sorted(page.entries, key=lambda e: e.version_id)]
    assert times == sorted(times)


async def test_history_since_and_paging(storage: Storage) -> None:
    for i in range(5):
        await storage.apply("p1", [UpdateOp("Patient", f"h{i}", patient(str(i)))], CTX)
    page = await storage.history("p1", count=2, offset=0)
    assert page.total == 5 and len(page.entries) == 2
    rest = await storage.history("p1", count=10, offset=2)
    assert len(rest.entries) == 3
    newest = page.entries[0].last_updated
    since = await storage.history("p1", since=newest - timedelta(microseconds=1))
    assert [e.id for e in since.entries] == ["h4"]


async def test_api_keys(storage: Storage) -> None:
    assert await storage.ensure_project("p1", "One")
    assert not await storage.ensure_project("p1", "One")
    record = await storage.add_api_key("p1", "hash-1", name="admin", admin=True)
    found = await storage.find_api_key("hash-1")
    assert found == record
    assert await storage.find_api_key("other") is None


async def test_config_writes_bump_the_generation_every_event_carries(storage: Storage) -> None:
    [plain] = await storage.apply("p1", [UpdateOp("Patient", "g", patient("A"))], CTX)
    assert plain.event is not None and plain.event.config_generation == 0
    subscription = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "test",
        "criteria": "Patient?name=A",
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:1/hook"},
    }
    [sub] = await storage.apply("p1", [CreateOp(subscription)], CTX)
    assert sub.event is not None and sub.event.config_generation == 1
    [after] = await storage.apply("p1", [UpdateOp("Patient", "g", patient("B"))], CTX)
    assert after.event is not None and after.event.config_generation == 1
    [other] = await storage.apply("p2", [UpdateOp("Patient", "g", patient("B"))], CTX)
    assert other.event is not None and other.event.config_generation == 0


async def test_a_write_registers_its_project(storage: Storage) -> None:
    await storage.apply("unregistered", [CreateOp(patient("A"))], CTX)
    assert not await storage.ensure_project("unregistered", "Named later")
    # Its index rows carry the project's key, so a search in the project finds the resource.
    found = await storage.search("unregistered", parse_search("Patient?family=A").query)
    assert [r.content["name"] for r in found if r.content] == [[{"family": "A"}]]


def observation(oid: str, **refs: str) -> dict[str, object]:
    """An Observation with id ``oid`` and a reference per keyword (``subject="Patient/a"``)."""
    references: dict[str, object] = {name: {"reference": target} for name, target in refs.items()}
    if "performer" in references:
        references["performer"] = [references["performer"]]  # Observation.performer is a list
    return {"resourceType": "Observation", "id": oid, "status": "final", **references}


async def _put(storage: Storage, project: str, *resources: dict[str, object]) -> None:
    ops = [UpdateOp(str(r["resourceType"]), str(r["id"]), r) for r in resources]
    await storage.apply(project, ops, CTX)


async def test_current_resources_are_the_live_ones_of_the_types(storage: Storage) -> None:
    await _put(
        storage,
        "p1",
        {**patient("A"), "id": "a1"},
        {**patient("B"), "id": "Z1"},
        {**patient("C"), "id": "gone"},
        observation("o1"),
        {"resourceType": "Basic", "id": "b1", "code": {"text": "other type"}},
    )
    await storage.apply("p1", [DeleteOp("Patient", "gone")], CTX)
    await _put(storage, "p2", {**patient("D"), "id": "other"})
    found = await storage.current_resources("p1", "Patient", "Observation")
    # Type, then id by code point ("Z1" before "a1") on both engines.
    assert [(r.resource_type, r.id) for r in found] == [
        ("Observation", "o1"),
        ("Patient", "Z1"),
        ("Patient", "a1"),
    ]
    assert all(not r.deleted and r.content is not None for r in found)
    assert await storage.current_resources("p1") == []
    assert await storage.current_resources("p3", "Patient") == []


async def test_current_by_ids_leaves_out_missing_and_deleted(storage: Storage) -> None:
    await _put(
        storage,
        "p1",
        *({**patient(i), "id": i} for i in ("b", "a", "gone")),
    )
    await storage.apply("p1", [DeleteOp("Patient", "gone")], CTX)
    found = await storage.current_by_ids("p1", "Patient", ["b", "gone", "never", "a"])
    assert [r.id for r in found] == ["a", "b"]
    assert await storage.current_by_ids("p2", "Patient", ["a"]) == []
    assert await storage.current_by_ids("p1", "Patient", []) == []


async def test_current_ids_everywhere_spans_projects(storage: Storage) -> None:
    await _put(storage, "p2", {**patient("A"), "id": "x"})
    await _put(storage, "p1", {**patient("B"), "id": "y"}, {**patient("C"), "id": "gone"})
    await _put(storage, "p1", observation("o1"))
    await storage.apply("p1", [DeleteOp("Patient", "gone")], CTX)
    assert await storage.current_ids_everywhere("Patient") == [("p1", "y"), ("p2", "x")]
    assert await storage.current_ids_everywhere("Bot") == []


async def test_search_takes_the_parsed_query(storage: Storage) -> None:
    await _put(storage, "p1", *({**patient(f), "id": f.lower()} for f in ("Abbot", "Abel", "Zed")))
    await _put(storage, "p2", {**patient("Abner"), "id": "elsewhere"})
    await storage.apply("p1", [DeleteOp("Patient", "abel")], CTX)
    query = parse_search("Patient?family=ab&_sort=-family").query
    assert [r.id for r in await storage.search("p1", query)] == ["abbot"]
    assert await storage.search_count("p1", query) == 1
    everyone = parse_search("Patient?_sort=family&_count=1&_offset=1").query
    assert [r.id for r in await storage.search("p1", everyone)] == ["zed"]
    assert await storage.search_count("p1", everyone) == 2
    with pytest.raises(SearchError, match="cannot sort"):
        await storage.search("p1", parse_search("Observation?_sort=code-value-quantity").query)


async def test_a_search_bounded_in_bytes_ends_after_the_row_that_passes_the_bound(
    storage: Storage,
) -> None:
    await _put(storage, "p1", *({**patient("x" * 1000), "id": f"p{i}"} for i in range(6)))
    query = parse_search("Patient?_sort=_id&_count=6").query
    whole = await storage.search("p1", query, max_bytes=100_000)
    assert [r.id for r in whole] == [f"p{i}" for i in range(6)]
    assert isinstance(whole, SearchPage) and not whole.truncated
    page = await storage.search("p1", query, max_bytes=2500)  # each row is over 1,000 bytes
    assert [r.id for r in page] == ["p0", "p1", "p2"]
    assert isinstance(page, SearchPage) and page.truncated
    unbounded = await storage.search("p1", query)
    assert len(unbounded) == 6


async def test_include_targets_and_revinclude_sources(storage: Storage) -> None:
    await _put(
        storage,
        "p1",
        {**patient("A"), "id": "a"},
        observation("o1", subject="Patient/a", performer="Practitioner/dr"),
        observation("o2", subject="Patient/never"),
        observation("o3"),
    )
    await _put(storage, "p2", observation("o4", subject="Patient/a"))
    ids = ["o1", "o2", "o3", "o4"]
    # Targets need not exist; another project's resources are not sources.
    assert await storage.include_targets("p1", "Observation", ["subject"], ids) == {
        ("Patient", "a"),
        ("Patient", "never"),
    }
    assert await storage.include_targets("p1", "Observation", ["subject", "performer"], ids) == {
        ("Patient", "a"),
        ("Patient", "never"),
        ("Practitioner", "dr"),
    }
    assert await storage.include_targets("p1", "Observation", [], ids) == set()
    assert await storage.include_targets("p1", "Observation", ["subject"], []) == set()
    targets = [("Patient", "a"), ("Practitioner", "dr"), ("Group", "g")]
    assert await storage.revinclude_sources("p1", "Observation", ["subject"], targets) == {
        ("Observation", "o1")
    }
    assert await storage.revinclude_sources(
        "p1", "Observation", ["subject", "performer"], [*targets, ("Patient", "never")]
    ) == {("Observation", "o1"), ("Observation", "o2")}
    assert await storage.revinclude_sources("p2", "Observation", ["subject"], targets) == {
        ("Observation", "o4")
    }
    assert await storage.revinclude_sources("p1", "Observation", [], targets) == set()
    assert await storage.revinclude_sources("p1", "Observation", ["subject"], []) == set()


async def test_existing_names_the_live_resources_among_keys(storage: Storage) -> None:
    await _put(storage, "p1", {**patient("A"), "id": "a"}, {**patient("B"), "id": "gone"})
    await _put(storage, "p1", observation("o1"))
    await _put(storage, "p2", {**patient("C"), "id": "c"})
    await storage.apply("p1", [DeleteOp("Patient", "gone")], CTX)
    keys = [("Patient", "a"), ("Patient", "gone"), ("Patient", "c"), ("Observation", "o1")]
    assert await storage.existing("p1", [*keys, ("Patient", "a"), ("Group", "g")]) == {
        ("Patient", "a"),
        ("Observation", "o1"),
    }
    assert await storage.existing("p1", []) == set()


async def test_referrers_are_the_live_holders_of_an_indexed_reference(storage: Storage) -> None:
    await _put(
        storage,
        "p1",
        {**patient("A"), "id": "a"},
        observation("o1", subject="Patient/a", performer="Practitioner/dr"),
        observation("o2", subject="Patient/a/_history/1"),
        observation("o3", subject="https://fhir.example/fhir/R4/Patient/a"),
        observation("gone", subject="Patient/a"),
        {
            "resourceType": "Encounter",
            "id": "e1",
            "status": "finished",
            "subject": {"reference": "Patient/a"},
            "class": {"code": "AMB"},
        },
    )
    await storage.apply("p1", [DeleteOp("Observation", "gone")], CTX)
    await _put(storage, "p2", observation("o4", subject="Patient/a"))
    # Several parameters index Observation.subject (subject, patient): one row each referrer.
    assert await storage.referrers("p1", ["Patient/a"], limit=10) == [
        ("Encounter", "e1", "Patient/a"),
        ("Observation", "o1", "Patient/a"),
        ("Observation", "o2", "Patient/a"),
    ]
    assert await storage.referrers("p1", ["Patient/a"], limit=1) == [
        ("Encounter", "e1", "Patient/a")
    ]
    absolute = "https://fhir.example/fhir/R4/Patient/a"
    assert await storage.referrers("p1", [absolute, "Practitioner/dr"], limit=10) == [
        ("Observation", "o1", "Practitioner/dr"),
        ("Observation", "o3", absolute),
    ]
    assert await storage.referrers("p1", ["Patient/a"], limit=10, skip_types=["Encounter"]) == [
        ("Observation", "o1", "Patient/a"),
        ("Observation", "o2", "Patient/a"),
    ]
    assert await storage.referrers("p1", ["Patient/nobody"], limit=10) == []
    assert await storage.referrers("p1", [], limit=10) == []
