"""Differential test of search: SQL search == in-memory matcher, on SQLite and PostgreSQL.

The Synthea bundles are stored through the real storage adapters with the search indexer;
then a few hundred queries generated from the stored values (every parameter type, modifiers,
prefixes, OR and AND) run both as SQL and through :func:`fhirbots.subscriptions.search.matches` over
every stored resource. Both must return exactly the same ids, and both engines the same pages.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from fhirbots.engine.storage.model import CreateOp, WriteContext
from fhirbots.engine.storage.port import Storage
from fhirbots.engine.storage.postgres import PostgresStorage
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.storage.sqlite import SqliteStorage
from fhirbots.subscriptions.search import SearchQuery, matches, parse_params, resource_entries
from fhirbots.subscriptions.search.entries import composite_groups, entries_for
from fhirbots.subscriptions.search.implicit import implicit_system
from fhirbots.subscriptions.search.query import ChainClause, HasClause
from fhirbots.subscriptions.search.registry import Registry
from fhirbots.subscriptions.search.stored import project_registry
from fhirbots.subscriptions.search.terminology import Terminology
from fhirbots.subscriptions.search.values import MAX_US, MIN_US
from tests.conftest import scratch_database

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PROJECT = "diff"
SEED = 20240601
"""Fixed seed: the same queries on every run, so a failure reproduces."""
QUERY_COUNT = 320
"""Generated queries per engine (the issue asks for at least 300)."""
BUNDLES = int(os.environ.get("FHIRBOTS_SEARCH_DIFF_BUNDLES", "12"))
"""Synthea bundles loaded (of 41); ~3,500 resources keep the PostgreSQL load under a minute.
Set FHIRBOTS_SEARCH_DIFF_BUNDLES=41 for the whole set."""

_URN = re.compile(r'"(urn:uuid:[0-9a-f-]+)"')


def synthea_bundles(shared_dir: Path) -> list[list[dict[str, Any]]]:
    """Resources of each Synthea bundle, ``urn:uuid`` references rewritten to ``Type/id`` (as
    a transaction would), and the HL7 examples as one more batch."""
    bundles: list[list[dict[str, Any]]] = []
    for path in sorted((shared_dir / "fhir-samples" / "synthea-r4").glob("*.json"))[:BUNDLES]:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        local = {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle["entry"]
        }
        text = json.dumps([e["resource"] for e in bundle["entry"]])

        def resolve(match: re.Match[str], urls: dict[str, str] = local) -> str:
            return json.dumps(urls.get(match.group(1), match.group(1)))

        text = _URN.sub(resolve, text)
        bundles.append(json.loads(text))
    # The HL7 examples add shapes Synthea lacks: Ranges, typed identifiers, uris, strings.
    examples = sorted((shared_dir / "fhir-samples" / "hl7-r4-examples").glob("*.json"))
    bundles.append([json.loads(p.read_text(encoding="utf-8")) for p in examples])
    return bundles


def us_core_parameters(shared_dir: Path) -> list[dict[str, Any]]:
    """The US Core SearchParameter resources (race, ethnicity, asserted-date ...)."""
    path = shared_dir / "fhir" / "search-parameters-us-core.json"
    return [e["resource"] for e in json.loads(path.read_text(encoding="utf-8"))["entry"]]


@dataclass
class Loaded:
    """A storage with the bundles in it, and what it stored."""

    name: str
    storage: Storage
    resources: list[dict[str, Any]]


async def _load(name: str, storage: Storage, bundles: list[list[dict[str, Any]]]) -> Loaded:
    await storage.open()
    for bundle in bundles:
        await storage.apply(PROJECT, [CreateOp(r, id=r["id"]) for r in bundle], WriteContext())
    stored: list[dict[str, Any]] = []
    for resource_type in sorted({r["resourceType"] for b in bundles for r in b}):
        found = await storage.search(PROJECT, SearchQuery(resource_type))
        stored.extend(s.content for s in found if s.content)
    return Loaded(name, storage, stored)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engines(
    shared_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[list[Loaded]]:
    """Both engines loaded with the same bundles. PostgreSQL gets a database of its own, so
    tests that reset the session's database do not interfere."""
    # The US Core SearchParameters first: the project's resources are indexed with them too.
    bundles = [us_core_parameters(shared_dir), *synthea_bundles(shared_dir)]
    indexer = SqlSearchIndexer()
    sqlite = SqliteStorage(tmp_path_factory.mktemp("search") / "diff.db", indexer=indexer)
    async with scratch_database() as dsn:
        postgres = PostgresStorage(dsn, indexer=indexer)
        try:
            loaded = [
                await _load("sqlite", sqlite, bundles),
                await _load("postgres", postgres, bundles),
            ]
            # Fresh tables have no planner statistics until autovacuum runs; without them
            # PostgreSQL may pick nested loops over the index subqueries.
            stats = await asyncpg.connect(dsn)
            await stats.execute("ANALYZE")
            await stats.close()
            yield loaded
        finally:
            await sqlite.close()
            await postgres.close()


# --- query generation ----------------------------------------------------------------------

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def _date_text(us: int, rng: random.Random) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    formats = ("%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime(rng.choice(formats))


def _number_text(value: float, rng: random.Random) -> str:
    digits = rng.choice((0, 0, 1, 2))
    return f"{value:.{digits}f}"


def _mixed_case(text: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in text)


def _string_value(entry: Any, rng: random.Random) -> tuple[str, str] | None:
    choice = rng.random()
    if choice < 0.2:
        return ":exact", entry.exact
    if choice < 0.35 and len(entry.norm) > 2:
        start = rng.randrange(len(entry.norm) - 1)
        return ":contains", entry.norm[start : start + rng.randint(1, 4)]
    return "", _mixed_case(entry.norm[: rng.randint(1, max(1, len(entry.norm)))], rng)


def _token_value(entry: Any, rng: random.Random) -> tuple[str, str] | None:
    choice = rng.random()
    if entry.code is None or choice < 0.1:
        if entry.text:
            return ":text", entry.text[: rng.randint(1, len(entry.text))]
        return None
    if entry.type_code and choice < 0.2:
        return ":of-type", f"{entry.type_system or ''}|{entry.type_code}|{entry.code}"
    if choice < 0.3:
        return ":not", entry.code
    if choice < 0.55 and entry.system:
        return "", f"{entry.system}|{entry.code}"
    if choice < 0.65:
        return "", f"{entry.system}|" if entry.system else f"|{entry.code}"
    return "", entry.code


def _reference_value(entry: Any, rng: random.Random) -> tuple[str, str] | None:
    if entry.id_value is not None:
        return ":identifier", f"{entry.id_system or ''}|{entry.id_value}"
    if entry.ref_type is None:
        return ("", entry.url) if entry.url and "," not in entry.url else None
    choice = rng.random()
    if choice < 0.4:
        return "", f"{entry.ref_type}/{entry.ref_id}"
    if choice < 0.7:
        return "", entry.ref_id
    return f":{entry.ref_type}", entry.ref_id


def _date_value(entry: Any, rng: random.Random) -> tuple[str, str] | None:
    point = entry.low if entry.low != MIN_US else entry.high
    if point in (MIN_US, MAX_US):
        return None
    return "", rng.choice(PREFIXES) + _date_text(point, rng)


def _quantity_value(entry: Any, rng: random.Random) -> tuple[str, str] | None:
    point = entry.low if math.isfinite(entry.low) else entry.high
    if not math.isfinite(point):
        return None
    text = rng.choice(PREFIXES) + _number_text(point, rng)
    if len(entry) > 2 and entry.code and rng.random() < 0.5:
        system = entry.system if rng.random() < 0.5 and entry.system else ""
        text += f"|{system}|{entry.code}"
    return "", text


def _uri_value(entry: Any, rng: random.Random) -> tuple[str, str] | None:
    choice = rng.random()
    if choice < 0.3:
        return ":below", entry.uri[: rng.randint(1, len(entry.uri))]
    if choice < 0.5:
        return ":above", entry.uri + "/extra"
    return "", entry.uri


GENERATORS = {
    "string": _string_value,
    "token": _token_value,
    "reference": _reference_value,
    "date": _date_value,
    "number": _quantity_value,
    "quantity": _quantity_value,
    "uri": _uri_value,
}


def _clause_for(resource: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    from fhirbots.subscriptions.search import default_registry

    registry = default_registry()
    entries = resource_entries(resource)
    if not entries:
        return None
    # Pick the parameter type first, so rarer types (quantity, uri) get their share.
    by_kind: dict[str, list[str]] = {}
    for name in sorted(entries):
        found = registry.get(resource["resourceType"], name)
        if found is not None:
            by_kind.setdefault(found.type, []).append(name)
    code = rng.choice(by_kind[rng.choice(sorted(by_kind))])
    param = registry.get(resource["resourceType"], code)
    if param is None:
        return None
    if rng.random() < 0.05:
        return f"{code}:missing", rng.choice(("true", "false"))
    entry = rng.choice(entries[code])
    made = GENERATORS[param.type](entry, rng)
    if made is None or not made[1]:
        return None
    implicit = implicit_system(param)
    if implicit is not None and made[0] == "" and entry.system is None and entry.code:
        # A bound code element searched with its implicit system (gender=<system>|male).
        made = ("", f"{implicit}|{entry.code}" if rng.random() < 0.8 else f"{implicit}|")
    modifier, value = made
    return f"{code}{modifier}", value.replace("\\", "\\\\").replace(",", "\\,").replace("$", "\\$")


def _composite_clause(resource: dict[str, Any], rng: random.Random) -> tuple[str, str] | None:
    """``code$value`` of one element of a composite parameter the resource has."""
    from fhirbots.subscriptions.search import default_registry

    registry = default_registry()
    codes = [
        c
        for c in registry.codes(resource["resourceType"])
        if (p := registry.get(resource["resourceType"], c)) is not None
        and p.type == "composite"
        and p.supported
    ]
    rng.shuffle(codes)
    for code in codes:
        param = registry.get(resource["resourceType"], code)
        assert param is not None
        groups = [g for g in composite_groups(param, resource) if all(g)]
        if not groups:
            continue
        parts: list[str] = []
        for kind, entries in zip(param.component_types, rng.choice(groups), strict=True):
            made = GENERATORS[kind](rng.choice(entries), rng)
            # Composite parts take no modifiers: retry until a plain value comes out.
            for _ in range(10):
                if made is not None and made[0] == "" and made[1]:
                    break
                made = GENERATORS[kind](rng.choice(entries), rng)
            if made is None or made[0] != "" or not made[1]:
                return None
            parts.append(made[1].replace("\\", "\\\\").replace("$", "\\$").replace(",", "\\,"))
        return code, "$".join(parts)
    return None


def generate_queries(resources: list[dict[str, Any]], count: int) -> list[SearchQuery]:
    """``count`` distinct queries built from stored values (so most of them have hits)."""
    rng = random.Random(SEED)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_type.setdefault(resource["resourceType"], []).append(resource)
    types = sorted(by_type)
    seen: set[str] = set()
    queries: list[SearchQuery] = []
    while len(queries) < count:
        # Half by type (every type gets queries), half by resource (common types get more).
        resource = rng.choice(by_type[rng.choice(types)] if rng.random() < 0.5 else resources)
        resource_type = resource["resourceType"]
        first = _composite_clause(resource, rng) if rng.random() < 0.25 else None
        first = first or _clause_for(resource, rng)
        if first is None:
            continue
        pairs = [first]
        roll = rng.random()
        if roll < 0.25:  # OR: a value of the same parameter from another resource
            other = _clause_for(rng.choice(by_type[resource_type]), rng)
            if other is not None and other[0] == first[0]:
                pairs = [(first[0], f"{first[1]},{other[1]}")]
        elif roll < 0.5:  # AND: a second parameter of the same resource
            second = _clause_for(resource, rng)
            if second is not None:
                pairs.append(second)
        key = f"{resource_type}?{pairs}"
        if key in seen:
            continue
        seen.add(key)
        queries.append(parse_params(resource_type, pairs).query)
    return queries


def expected_ids(query: SearchQuery, resources: list[dict[str, Any]]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources if matches(query, r)}


async def sql_ids(loaded: Loaded, query: SearchQuery) -> list[str]:
    return [f"{s.resource_type}/{s.id}" for s in await loaded.storage.search(PROJECT, query)]


# --- tests ---------------------------------------------------------------------------------


async def test_both_engines_stored_the_same_resources(engines: list[Loaded]) -> None:
    sqlite, postgres = engines
    assert len(sqlite.resources) == len(postgres.resources) > 1000


@pytest.mark.parametrize("engine", [0, 1], ids=["sqlite", "postgres"])
async def test_sql_search_equals_in_memory_matcher(engines: list[Loaded], engine: int) -> None:
    loaded = engines[engine]
    queries = generate_queries(engines[0].resources, QUERY_COUNT)
    assert len(queries) >= 300
    mismatches: list[str] = []
    non_empty = 0
    for query in queries:
        expected = expected_ids(query, loaded.resources)
        got = await sql_ids(loaded, query)
        assert len(got) == len(set(got)), "a resource appears twice"
        non_empty += bool(expected)
        if set(got) != expected:
            names = "&".join(c.name for c in query.clauses)
            mismatches.append(
                f"{query.resource_type}?{names}: sql-only {sorted(set(got) - expected)[:3]}, "
                f"matcher-only {sorted(expected - set(got))[:3]}"
            )
    assert not mismatches, "\n".join(mismatches[:20])
    # Most queries come from stored values, so the comparison is not between empty sets.
    assert non_empty >= len(queries) * 0.7


@pytest.mark.parametrize("engine", [0, 1], ids=["sqlite", "postgres"])
async def test_counts_agree(engines: list[Loaded], engine: int) -> None:
    loaded = engines[engine]
    for query in generate_queries(engines[0].resources, 40):
        assert await loaded.storage.search_count(PROJECT, query) == len(
            expected_ids(query, loaded.resources)
        )


SORTED_SEARCHES = [
    ("Observation", [("code", "http://loinc.org|8302-2"), ("_sort", "-date")]),
    ("Observation", [("_sort", "code,-value-quantity")]),
    ("Patient", [("_sort", "family,given")]),
    ("Patient", [("_sort", "-birthdate")]),
    ("Encounter", [("_sort", "date,-_id")]),
    ("Condition", [("_sort", "code")]),
]


@pytest.mark.parametrize(("resource_type", "pairs"), SORTED_SEARCHES)
async def test_sorted_paging_is_stable_and_identical_on_both_engines(
    engines: list[Loaded], resource_type: str, pairs: list[tuple[str, str]]
) -> None:
    full = parse_params(resource_type, pairs).query
    orders = [await sql_ids(loaded, full) for loaded in engines]
    assert orders[0] == orders[1]
    assert orders[0]
    page_size = 7
    for loaded in engines:
        paged: list[str] = []
        for page in range(0, min(len(orders[0]), 5 * page_size), page_size):
            query = parse_params(
                resource_type, [*pairs, ("_count", str(page_size)), ("_offset", str(page))]
            ).query
            paged.extend(await sql_ids(loaded, query))
        assert paged == orders[0][: len(paged)]


CHAINED = [
    ("Observation", [("subject:Patient.gender", "female"), ("code", "8302-2")]),
    ("Encounter", [("subject:Patient.birthdate", "lt1970")]),
    ("Patient", [("_has:Observation:patient:code", "http://loinc.org|8302-2")]),
    ("Patient", [("_has:Condition:subject:code", "444814009,195662009")]),
]


@pytest.mark.parametrize(("resource_type", "pairs"), CHAINED)
async def test_chains_and_has_agree_with_a_manual_join(
    engines: list[Loaded], resource_type: str, pairs: list[tuple[str, str]]
) -> None:
    query = parse_params(resource_type, pairs).query
    for loaded in engines:
        by_ref = {f"{r['resourceType']}/{r['id']}": r for r in loaded.resources}
        expected: set[str] = set()
        for resource in loaded.resources:
            if resource["resourceType"] == resource_type and _joined(query, resource, by_ref):
                expected.add(f"{resource_type}/{resource['id']}")
        assert set(await sql_ids(loaded, query)) == expected
        assert expected


def _joined(query: SearchQuery, resource: dict[str, Any], by_ref: dict[str, Any]) -> bool:
    """Evaluate chains and _has by following references in memory, for comparison."""
    for clause in query.clauses:
        if isinstance(clause, ChainClause):
            refs = resource_entries(resource).get(clause.param.code, [])
            inner = SearchQuery(clause.target_type, (clause.inner,))
            targets = [by_ref.get(f"{e.ref_type}/{e.ref_id}") for e in refs if e.ref_type]
            if not any(t is not None and matches(inner, t) for t in targets):
                return False
        elif isinstance(clause, HasClause):
            if (resource["resourceType"], resource["id"]) not in _has_targets(clause, by_ref):
                return False
        elif not matches(SearchQuery(query.resource_type, (clause,)), resource):
            return False
    return True


_HAS_CACHE: dict[tuple[int, str], set[tuple[str | None, str | None]]] = {}


def _has_targets(clause: HasClause, by_ref: dict[str, Any]) -> set[tuple[str | None, str | None]]:
    """``(type, id)`` pointed to by the clause's reference from sources matching its inner
    clause (computed once per clause and engine)."""
    key = (id(by_ref), clause.name)
    if key not in _HAS_CACHE:
        inner = SearchQuery(clause.source_type, (clause.inner,))
        _HAS_CACHE[key] = {
            (e.ref_type, e.ref_id)
            for r in by_ref.values()
            if r["resourceType"] == clause.source_type and matches(inner, r)
            for e in resource_entries(r).get(clause.reference.code, [])
        }
    return _HAS_CACHE[key]


# --- the project's own definitions ---------------------------------------------------------


def _custom_and_terminology_queries(
    resources: list[dict[str, Any]], registry: Registry, rng: random.Random
) -> list[SearchQuery]:
    """Queries on the US Core parameters, and ``:in``/``:not-in``/``:below``/``:above`` over a
    ValueSet and a CodeSystem made from stored Observation codes."""
    queries: list[SearchQuery] = []
    custom = [
        p
        for t in ("Patient", "Condition", "Encounter", "CareTeam", "Goal")
        for p in registry.supported_params(t)
        if p.url.startswith("http://hl7.org/fhir/us/core/")
    ]
    for param in custom:
        values = sorted(
            {
                str(getattr(e, "code", None) or getattr(e, "low", ""))
                for r in resources
                if r["resourceType"] == param.resource_type
                for e in entries_for(param, r)
            }
        )
        for value in [v for v in values if v and not set(v) & set(",|$\\")][:6]:
            text = value if param.type != "date" else "ge" + _date_text(int(value), rng)
            queries.append(
                parse_params(param.resource_type, [(param.code, text)], registry=registry).query
            )
    codes = sorted(
        {
            (c["system"], c["code"])
            for r in resources
            if r["resourceType"] == "Observation"
            for c in r.get("code", {}).get("coding", [])
            if c.get("system") and c.get("code")
        }
    )
    chosen = rng.sample(codes, min(12, len(codes)))
    system = "http://loinc.org"
    loinc = [code for sys, code in codes if sys == system]
    # A hierarchy over stored LOINC codes: each code's parent is an earlier one.
    concept = [
        {"code": code, "property": [{"code": "parent", "valueCode": loinc[rng.randrange(i)]}]}
        if i
        else {"code": code}
        for i, code in enumerate(loinc)
    ]
    terminology = Terminology(
        [
            {
                "resourceType": "ValueSet",
                "url": "urn:vs:chosen",
                "compose": {
                    "include": [
                        {"system": sys, "concept": [{"code": code}]} for sys, code in chosen
                    ]
                },
            },
            {"resourceType": "CodeSystem", "url": system, "concept": concept},
        ]
    )
    for name, value in [
        ("code:in", "urn:vs:chosen"),
        ("code:not-in", "urn:vs:chosen"),
        *(("code:below", f"{system}|{code}") for code in rng.sample(loinc, min(4, len(loinc)))),
        *(("code:above", f"{system}|{code}") for code in rng.sample(loinc, min(4, len(loinc)))),
    ]:
        queries.append(parse_params("Observation", [(name, value)], terminology=terminology).query)
    return queries


@pytest.mark.parametrize("engine", [0, 1], ids=["sqlite", "postgres"])
async def test_project_definitions_agree(
    engines: list[Loaded], engine: int, shared_dir: Path
) -> None:
    """US Core parameters (indexed at load through the project's SearchParameters) and
    terminology modifiers: SQL == the matcher, with hits."""
    loaded = engines[engine]
    registry = project_registry(us_core_parameters(shared_dir))
    queries = _custom_and_terminology_queries(loaded.resources, registry, random.Random(SEED))
    assert len(queries) >= 12
    non_empty = 0
    for query in queries:
        expected = expected_ids(query, loaded.resources)
        non_empty += bool(expected)
        got = await sql_ids(loaded, query)
        assert set(got) == expected, [c.name for c in query.clauses]
    assert non_empty >= len(queries) * 0.7
