"""Tests of typed index values: date ranges, normalisation, entries per FHIR type."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from fhirbots.subscriptions.search.values import (
    MAX_US,
    DateEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    date_entries,
    normalize,
    number_entries,
    parse_date_range,
    quantity_entries,
    reference_entries,
    string_entries,
    token_entries,
    uri_entries,
)


def us(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2020", us(2020, 1, 1), us(2021, 1, 1) - 1),
        ("2020-02", us(2020, 2, 1), us(2020, 3, 1) - 1),
        ("2020-12", us(2020, 12, 1), us(2021, 1, 1) - 1),
        ("2020-02-29", us(2020, 2, 29), us(2020, 3, 1) - 1),
        ("2020-02-29T10:00", us(2020, 2, 29, 10), us(2020, 2, 29, 10, 1) - 1),
        ("2020-02-29T10:00:05Z", us(2020, 2, 29, 10, 0, 5), us(2020, 2, 29, 10, 0, 6) - 1),
        ("2020-02-29T10:00:05+02:00", us(2020, 2, 29, 8, 0, 5), us(2020, 2, 29, 8, 0, 6) - 1),
        ("2020-02-29T10:00:05.5Z", us(2020, 2, 29, 10, 0, 5) + 500_000, None),
    ],
)
def test_date_precision_ranges(text: str, low: int, high: int | None) -> None:
    entry = parse_date_range(text)
    assert entry is not None
    assert entry.low == low
    assert entry.high == (high if high is not None else low + 100_000 - 1)


@pytest.mark.parametrize("text", ["2020-13", "2020-02-30", "20", "yesterday", "2020-01-01T25:00"])
def test_malformed_dates(text: str) -> None:
    assert parse_date_range(text) is None


def test_period_and_timing_entries() -> None:
    period = date_entries({"start": "2020-01-01", "end": "2020-01-31"})
    assert period == [DateEntry(us(2020, 1, 1), us(2020, 2, 1) - 1)]
    ongoing = date_entries({"start": "2020-01-01"})
    assert ongoing[0].high == MAX_US
    timing = date_entries({"event": ["2020-01-01", "2020-02-01"]})
    assert len(timing) == 2


def test_normalize_strips_accents_and_case() -> None:
    assert normalize("Éve  Müller") == "eve muller"
    assert normalize("STRASSE") == normalize("straße")


def test_string_entries_of_humanname_and_address() -> None:
    name = {"family": "Chalmers", "given": ["Peter", "James"], "use": "official"}
    assert [e.exact for e in string_entries(name)] == ["Chalmers", "Peter", "James"]
    address = {"line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}
    assert StringEntry("pleasantville", "PleasantVille") in string_entries(address)
    assert len(string_entries(address)) == 3


def test_token_entries_by_shape() -> None:
    concept = {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart"}]}
    assert token_entries(concept) == [TokenEntry("http://loinc.org", "8867-4", "heart")]
    assert token_entries(True) == [TokenEntry(None, "true", None)]
    assert token_entries("final") == [TokenEntry(None, "final", None)]
    phone = {"system": "phone", "value": "555-1234", "use": "home"}
    assert token_entries(phone) == [TokenEntry("phone", "555-1234", None)]
    ident = {
        "system": "urn:oid:1.2.36.146.595.217.0.1",
        "value": "12345",
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]
        },
    }
    (entry,) = token_entries(ident)
    assert (entry.system, entry.code, entry.type_code) == (ident["system"], "12345", "MR")


def test_reference_entries() -> None:
    assert reference_entries({"reference": "Patient/123/_history/2"}) == [
        ReferenceEntry("Patient", "123", "Patient/123")
    ]
    absolute = reference_entries({"reference": "http://example.org/fhir/Patient/1"})
    assert absolute == [ReferenceEntry(None, None, "http://example.org/fhir/Patient/1")]
    logical = reference_entries({"identifier": {"system": "s", "value": "v"}})
    assert logical == [ReferenceEntry(None, None, None, "s", "v")]
    assert reference_entries({"display": "only text"}) == []


def test_quantity_and_range_entries() -> None:
    q = {"value": 5.4, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}
    assert quantity_entries(q) == [QuantityEntry(5.4, 5.4, "http://unitsofmeasure.org", "mg", "mg")]
    (rng,) = quantity_entries({"low": {"value": 1, "unit": "a"}})
    assert rng.low == 1
    assert math.isinf(rng.high)
    assert number_entries(3) == [(3.0, 3.0)]
    assert number_entries(True) == []


def test_uri_entries() -> None:
    assert [e.uri for e in uri_entries(["http://a", "http://b"])] == ["http://a", "http://b"]
