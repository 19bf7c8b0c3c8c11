"""Tests of the SQL search index on an in-memory SQLite database."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.storage import sql
from fhirbots.engine.storage.model import IndexOwner
from fhirbots.engine.storage.search_index import (
    TABLES,
    SqlSearchIndexer,
    compile_count,
    compile_search,
    index_ddl,
    index_rows,
)
from fhirbots.subscriptions.search import parse_search

PROJECT = "p1"

RESOURCES: list[dict[str, Any]] = [
    {
        "resourceType": "Patient",
        "id": "pat-a",
        "meta": {"lastUpdated": "2024-01-01T00:00:00Z"},
        "name": [{"family": "Chalmers", "given": ["Peter"]}],
        "birthDate": "1974-12-25",
        "gender": "male",
    },
    {
        "resourceType": "Patient",
        "id": "pat-b",
        "meta": {"lastUpdated": "2024-01-02T00:00:00Z"},
        "name": [{"family": "Windsor", "given": ["Anne"]}],
        "birthDate": "1950-08-15",
        "gender": "female",
    },
    {
        "resourceType": "Patient",
        "id": "pat-c",
        "meta": {"lastUpdated": "2024-01-03T00:00:00Z"},
        "name": [{"family": "Ålvarez", "given": ["Éva"]}],
        "gender": "female",
    },
    {
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/pat-a"},
        "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "/min"},
        "effectiveDateTime": "2020-01-15T08:00:00Z",
    },
    {
        "resourceType": "Observation",
        "id": "obs-2",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
        "subject": {"reference": "Patient/pat-b"},
        "valueQuantity": {"value": 165, "system": "http://unitsofmeasure.org", "code": "cm"},
        "effectiveDateTime": "2021-03-01",
    },
    {
        "resourceType": "Observation",
        "id": "obs-3",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/pat-c"},
        "effectiveDateTime": "2022-05-01",
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 150, "system": "http://unitsofmeasure.org"},
            },
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                "valueQuantity": {"value": 95, "system": "http://unitsofmeasure.org"},
            },
        ],
    },
    {
        "resourceType": "ValueSet",
        "id": "vs-1",
        "url": "http://acme.org/fhir/ValueSet/123",
    },
]


def _store(conn: sqlite3.Connection, resource: dict[str, Any] | None, rid: str, rtype: str) -> None:
    indexer = SqlSearchIndexer()
    resource_key, project_key = conn.execute(
        sql.UPSERT_CURRENT,
        (PROJECT, rtype, rid, 1, "2024-01-01", int(resource is None), json.dumps(resource)),
    ).fetchone()
    owner = IndexOwner(resource_key, project_key, rtype)
    for statement, rows in indexer.statements("sqlite", owner, resource):
        conn.executemany(statement, rows)


def _database() -> sqlite3.Connection:
    """An in-memory database with the schema (made twice: the DDL is idempotent) and PROJECT."""
    connection = sqlite3.connect(":memory:")
    for statement in [*sql.schema("sqlite"), *index_ddl("sqlite"), *index_ddl("sqlite")]:
        connection.execute(statement)
    connection.execute(sql.INSERT_PROJECT, (PROJECT, PROJECT, "2024-01-01"))
    return connection


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    connection = _database()
    for resource in RESOURCES:
        _store(connection, resource, resource["id"], resource["resourceType"])
    yield connection
    connection.close()


def ids(conn: sqlite3.Connection, search: str, project: str = PROJECT) -> list[str]:
    query = parse_search(search).query
    text, params = compile_search(query, project=project, dialect="sqlite")
    return [row[1] for row in conn.execute(text, params)]


def count(conn: sqlite3.Connection, search: str) -> int:
    text, params = compile_count(parse_search(search).query, project=PROJECT)
    return int(conn.execute(text, params).fetchone()[0])


def test_ddl_covers_every_table() -> None:
    ddl = " ".join(index_ddl("postgres"))
    for kind in TABLES:
        assert f"CREATE TABLE IF NOT EXISTS search_{kind}" in ddl
    assert "BIGINT" in ddl
    assert "DOUBLE PRECISION" in ddl


def test_index_rows_are_entries_per_table() -> None:
    rows = index_rows("Observation", RESOURCES[3]).rows
    assert ("code", "http://loinc.org", "8867-4", None, None, None, None) in rows["token"]
    assert ("subject", "Patient", "pat-a", "Patient/pat-a", None, None, None) in rows["reference"]
    assert ("patient", "Patient", "pat-a", "Patient/pat-a", None, None, None) in rows["reference"]
    quantity = [r for r in rows["quantity"] if r[0] == "value-quantity"]
    unit = ("http://unitsofmeasure.org", "/min", None)
    assert quantity == [("value-quantity", 72.0, 72.0, *unit, None)]
    # Composite components carry the number of the element they come from.
    assert ("code-value-quantity$1", 72.0, 72.0, *unit, 0) in rows["quantity"]
    assert ("code-value-quantity$0", "http://loinc.org", "8867-4", None, None, None, 0) in rows[
        "token"
    ]
    assert {r[0] for r in rows["date"]} == {"date"}


def test_index_rows_have_no_duplicates() -> None:
    concept = {"coding": [{"code": "a"}, {"code": "a"}]}
    rows = index_rows("Observation", {"resourceType": "Observation", "code": concept}).rows
    assert len([r for r in rows["token"] if r[0] == "code"]) == 1


SEARCH_CASES: list[tuple[str, list[str]]] = [
    ("Patient?name=pet", ["pat-a"]),
    ("Patient?name=eva", ["pat-c"]),
    ("Patient?family:exact=Ålvarez", ["pat-c"]),
    ("Patient?family:contains=IND", ["pat-b"]),
    ("Patient?gender=female", ["pat-b", "pat-c"]),
    ("Patient?gender:not=female", ["pat-a"]),
    ("Patient?birthdate:missing=true", ["pat-c"]),
    ("Patient?birthdate=lt1960", ["pat-b"]),
    ("Patient?_lastUpdated=ge2024-01-02", ["pat-b", "pat-c"]),
    ("Observation?code=http://loinc.org|8302-2", ["obs-2"]),
    ("Observation?code=8867-4,8302-2", ["obs-1", "obs-2"]),
    ("Observation?subject=Patient/pat-a", ["obs-1"]),
    ("Observation?subject:Patient=pat-b", ["obs-2"]),
    ("Observation?value-quantity=gt100", ["obs-2"]),
    ("Observation?value-quantity=72||/min", ["obs-1"]),
    ("Observation?date=2020", ["obs-1"]),
    ("Observation?subject:Patient.name=windsor", ["obs-2"]),
    ("Observation?subject:Patient.gender=male", ["obs-1"]),
    ("Patient?_has:Observation:patient:code=8867-4", ["pat-a"]),
    ("ValueSet?url:below=http://acme.org/", ["vs-1"]),
    ("ValueSet?url:below=HTTP://acme.org/", []),
    ("ValueSet?url:above=http://acme.org/fhir/ValueSet/123/x", ["vs-1"]),
    ("Observation?code-value-quantity=http://loinc.org|8867-4$72", ["obs-1"]),
    ("Observation?code-value-quantity=8867-4$gt100,8302-2$gt100", ["obs-2"]),
    ("Observation?component-code-value-quantity=8480-6$gt140", ["obs-3"]),
    # both parts must hold on the same component: 8480-6 is 150, 8462-4 is 95
    ("Observation?component-code-value-quantity=8480-6$lt100", []),
    ("Observation?component-code-value-quantity=8462-4$lt100", ["obs-3"]),
    ("Observation?combo-code-value-quantity=8462-4$95,8867-4$72", ["obs-1", "obs-3"]),
    # A bound code element matches its implicit code system.
    ("Patient?gender=http://hl7.org/fhir/administrative-gender|female", ["pat-b", "pat-c"]),
    ("Patient?gender=http://hl7.org/fhir/administrative-gender|", ["pat-a", "pat-b", "pat-c"]),
    ("Patient?gender=http://example.org/gender|female", []),
    ("Patient?gender:not=http://hl7.org/fhir/administrative-gender|female", ["pat-a"]),
    # ge: the resource reaches the searched range; le: it starts within or before it.
    ("Observation?date=ge2020-01-15T08:00:00Z", ["obs-1", "obs-2", "obs-3"]),
    ("Observation?date=le2020-01", ["obs-1"]),
    ("Observation?date=le2021-03-01T12:00:00Z", ["obs-1", "obs-2"]),
    ("Observation?date=ge2021-03-01T23:59:59Z", ["obs-2", "obs-3"]),
    ("Patient?name=a_", []),  # LIKE wildcards in values are escaped
    ("Patient?name=%", []),
]
"""Searches over RESOURCES and the ids they return, in order (the PostgreSQL test reuses them)."""


@pytest.mark.parametrize(("search", "expected"), SEARCH_CASES)
def test_search(conn: sqlite3.Connection, search: str, expected: list[str]) -> None:
    assert ids(conn, search) == expected


def test_sort_and_paging(conn: sqlite3.Connection) -> None:
    assert ids(conn, "Patient?_sort=family") == ["pat-c", "pat-a", "pat-b"]  # Ålvarez as alvarez
    assert ids(conn, "Patient?_sort=-birthdate") == ["pat-a", "pat-b", "pat-c"]
    assert ids(conn, "Patient?_sort=birthdate") == ["pat-b", "pat-a", "pat-c"]  # missing last
    assert ids(conn, "Patient?_sort=gender,-_lastUpdated") == ["pat-c", "pat-b", "pat-a"]
    pages = [ids(conn, f"Patient?_count=2&_offset={o}") for o in (0, 2, 4)]
    assert pages == [["pat-a", "pat-b"], ["pat-c"], []]
    assert ids(conn, "Patient?_offset=1") == ["pat-b", "pat-c"]


def test_count(conn: sqlite3.Connection) -> None:
    assert count(conn, "Patient?gender=female&_count=1") == 2
    assert count(conn, "Observation") == 3


def test_system_level_search(conn: sqlite3.Connection) -> None:
    assert ids(conn, "_id=obs-1,pat-a") == ["obs-1", "pat-a"]
    assert ids(conn, "_lastUpdated=2024-01-03") == ["pat-c"]


def test_projects_are_separate(conn: sqlite3.Connection) -> None:
    assert ids(conn, "Patient", project="other") == []


def test_update_replaces_rows_and_delete_removes_them(conn: sqlite3.Connection) -> None:
    changed = {**RESOURCES[0], "gender": "female"}
    _store(conn, changed, "pat-a", "Patient")
    assert ids(conn, "Patient?gender=male") == []
    assert ids(conn, "Patient?gender=female") == ["pat-a", "pat-b", "pat-c"]
    _store(conn, None, "pat-b", "Patient")
    assert ids(conn, "Patient?gender=female") == ["pat-a", "pat-c"]
    owned = "SELECT COUNT(*) FROM search_token s JOIN resources r ON r.key = s.res WHERE r.id = ?"
    assert conn.execute(owned, ("pat-a",)).fetchone()[0] > 0
    assert conn.execute(owned, ("pat-b",)).fetchone()[0] == 0


def test_sqlite_agrees_with_the_matcher_on_synthea(shared_dir: Path) -> None:
    """A quick in-process differential (the full one, on both engines, is an integration
    test): generated queries over three Synthea bundles."""
    from tests.integration.test_search_differential import (
        expected_ids,
        generate_queries,
        synthea_bundles,
    )

    resources = [r for bundle in synthea_bundles(shared_dir)[:3] for r in bundle]
    connection = _database()
    for resource in resources:
        _store(connection, resource, resource["id"], resource["resourceType"])
    for query in generate_queries(resources, 120):
        text, params = compile_search(query, project=PROJECT)
        got = {f"{row[0]}/{row[1]}" for row in connection.execute(text, params)}
        assert got == expected_ids(query, resources), [c.name for c in query.clauses]
    connection.close()
