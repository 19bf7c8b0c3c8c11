"""Tests of the search string parser."""

from __future__ import annotations

import pytest

from fhirbots.subscriptions.search import (
    InvalidValueError,
    MissingTerminologyError,
    UnknownModifierError,
    UnknownParameterError,
    UnsupportedSearchError,
    parse_params,
    parse_search,
)
from fhirbots.subscriptions.search.parser import split_escaped, unescape
from fhirbots.subscriptions.search.query import (
    ChainClause,
    CompositeClause,
    DateValue,
    HasClause,
    MissingClause,
    NumberValue,
    ParamClause,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
)
from fhirbots.subscriptions.search.values import parse_date_range

NOW_US = 1_750_000_000 * 1_000_000  # 2025-06-15, pins `ap` on dates


def clause(search: str) -> ParamClause:
    (first,) = parse_search(search, now_us=NOW_US).query.clauses
    assert isinstance(first, ParamClause)
    return first


def test_issue_example() -> None:
    query = parse_search(
        "Observation?code=http://loinc.org|8867-4&date=ge2020-01&subject=Patient/1"
    ).query
    assert query.resource_type == "Observation"
    code, date, subject = query.clauses
    assert isinstance(code, ParamClause)
    assert isinstance(date, ParamClause)
    assert isinstance(subject, ParamClause)
    assert code.values == (TokenValue("http://loinc.org", "8867-4"),)
    jan = parse_date_range("2020-01")
    assert jan is not None
    assert date.values == (DateValue("ge", jan.low, jan.high),)
    assert subject.values == (ReferenceValue(ref_type="Patient", ref_id="1"),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8867-4", TokenValue(None, "8867-4")),
        ("http://loinc.org|8867-4", TokenValue("http://loinc.org", "8867-4")),
        ("|8867-4", TokenValue("", "8867-4")),
        ("http://loinc.org|", TokenValue("http://loinc.org", None)),
        ("a\\|b", TokenValue(None, "a|b")),
    ],
)
def test_token_forms(value: str, expected: TokenValue) -> None:
    assert clause(f"Observation?code={value}").values == (expected,)


def test_comma_is_or_and_repeat_is_and() -> None:
    query = parse_search("Patient?given=eve,adam&given=x").query
    first, second = query.clauses
    assert isinstance(first, ParamClause)
    assert isinstance(second, ParamClause)
    assert [v.raw for v in first.values if isinstance(v, StringValue)] == ["eve", "adam"]
    assert len(second.values) == 1


def test_escaped_comma_is_not_a_separator() -> None:
    (value,) = clause("Patient?family=a\\,b").values
    assert isinstance(value, StringValue)
    assert value.raw == "a,b"
    assert split_escaped("a\\,b,c", ",") == ["a\\,b", "c"]
    assert unescape("x\\$y\\\\") == "x$y\\"


def test_percent_decoding_keeps_plus() -> None:
    (value,) = clause("Observation?date=ge2020-01-01T10:00:00%2B02:00").values
    assert isinstance(value, DateValue)
    (plus,) = clause("Observation?date=ge2020-01-01T10:00:00+02:00").values
    assert plus == value


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [("100", 99.5, 100.5), ("100.00", 99.995, 100.005), ("1e2", 50.0, 150.0), ("0.1", 0.05, 0.15)],
)
def test_number_implied_precision(value: str, low: float, high: float) -> None:
    (number,) = clause(f"RiskAssessment?probability={value}").values
    assert isinstance(number, NumberValue)
    assert number.prefix == "eq"
    assert number.low == pytest.approx(low)
    assert number.high == pytest.approx(high)


def test_number_ap_is_ten_percent() -> None:
    (number,) = clause("RiskAssessment?probability=ap100").values
    assert number == NumberValue("ap", 100.0, 90.0, 110.0)


def test_quantity_forms() -> None:
    (full,) = clause("Observation?value-quantity=le5.4|http://unitsofmeasure.org|mg").values
    assert isinstance(full, QuantityValue)
    assert (full.number.prefix, full.system, full.code) == ("le", "http://unitsofmeasure.org", "mg")
    (unit_only,) = clause("Observation?value-quantity=5.4||mg").values
    assert isinstance(unit_only, QuantityValue)
    assert (unit_only.system, unit_only.code) == (None, "mg")


def test_date_ap_widens_by_distance_to_now() -> None:
    (value,) = clause("Observation?date=ap2015").values
    year = parse_date_range("2015")
    assert isinstance(value, DateValue)
    assert year is not None
    margin = (NOW_US - year.low) // 10
    assert value.low == pytest.approx(year.low - margin, abs=1)
    assert value.high == pytest.approx(year.high + margin, abs=1)


def test_reference_forms() -> None:
    bare = clause("Observation?subject=123").values[0]
    assert isinstance(bare, ReferenceValue)
    assert bare.ref_id == "123"
    assert "Patient" in bare.types
    typed = clause("Observation?subject:Patient=123").values[0]
    assert typed == ReferenceValue(ref_type="Patient", ref_id="123")
    url = clause("Observation?subject=http://x.org/fhir/Patient/1").values[0]
    assert url == ReferenceValue(url="http://x.org/fhir/Patient/1")
    ident = clause("Observation?subject:identifier=http://ids|42").values[0]
    assert ident == ReferenceValue(id_system="http://ids", id_value="42")


def test_missing_modifier() -> None:
    (missing,) = parse_search("Patient?birthdate:missing=true").query.clauses
    assert isinstance(missing, MissingClause)
    assert missing.missing
    with pytest.raises(InvalidValueError, match="birthdate:missing"):
        parse_search("Patient?birthdate:missing=maybe")


def test_of_type_modifier() -> None:
    (value,) = clause(
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|446053"
    ).values
    assert value == TokenValue(
        None, "446053", "http://terminology.hl7.org/CodeSystem/v2-0203", "MR"
    )


def test_chain_and_has() -> None:
    (chain,) = parse_search("Observation?subject:Patient.name=peter").query.clauses
    assert isinstance(chain, ChainClause)
    assert chain.target_type == "Patient"
    assert isinstance(chain.inner, ParamClause)
    assert chain.inner.param.code == "name"
    (has,) = parse_search("Patient?_has:Observation:patient:code=1234-5").query.clauses
    assert isinstance(has, HasClause)
    assert has.source_type == "Observation"
    assert has.reference.code == "patient"


def test_a_chain_follows_at_most_three_references() -> None:
    link = "subject:Patient.organization:Organization.partof:Organization"
    (deepest,) = parse_search(f"Observation?{link}.name=x").query.clauses
    assert isinstance(deepest, ChainClause)
    with pytest.raises(InvalidValueError, match="at most 3 references"):
        parse_search(f"Observation?{link}.partof:Organization.name=x")


@pytest.mark.parametrize("offset", ["10000001", "9" * 40])
def test_an_offset_past_the_bound_is_refused(offset: str) -> None:
    assert parse_search("Patient?_offset=10000000").query.offset == 10_000_000
    with pytest.raises(InvalidValueError, match="_offset: at most 10000000"):
        parse_search(f"Patient?_offset={offset}")


def test_ambiguous_chain_needs_a_type() -> None:
    with pytest.raises(InvalidValueError, match="ambiguous"):
        parse_search("Observation?subject.identifier=1")


def test_result_parameters() -> None:
    query = parse_search(
        "Observation?_count=10&_offset=20&_sort=-date,code&_total=accurate"
        "&_include=Observation:subject&_revinclude:iterate=Provenance:target&_summary=count"
        "&_elements=code,status"
    ).query
    assert query.count == 10
    assert query.offset == 20
    assert [(k.param.code, k.descending) for k in query.sort] == [("date", True), ("code", False)]
    assert query.total == "accurate"
    assert query.summary == "count"
    assert query.include == ("Observation:subject",)
    assert query.revinclude == ("Provenance:target:iterate",)
    assert query.elements == ("code", "status")
    assert query.clauses == ()


@pytest.mark.parametrize(
    ("search", "error", "named"),
    [
        ("Patient?nonsense=1", UnknownParameterError, "nonsense"),
        ("Patient?name:fuzzy=x", UnknownModifierError, "name:fuzzy"),
        ("Patient?birthdate=2020-13", InvalidValueError, "birthdate"),
        ("RiskAssessment?probability=abc", InvalidValueError, "probability"),
        ("Patient?_count=-1", InvalidValueError, "_count"),
        ("Observation?code-value-quantity=x", InvalidValueError, "code-value-quantity"),
        ("Observation?code-value-quantity=x$abc", InvalidValueError, "code-value-quantity"),
        ("Location?near=1|2|3|km", UnsupportedSearchError, "near"),
        ("Observation?code:in=http://vs", MissingTerminologyError, "code:in"),
        ("Observation?code:below=8867-4", InvalidValueError, "code:below"),
        ("Patient?_text=x", UnsupportedSearchError, "_text"),
        ("Observation?_sort=subject", UnsupportedSearchError, "_sort"),
        ("Observation?_sort=code-value-quantity", UnsupportedSearchError, "_sort"),
        ("Observation?_sort=nothing", UnknownParameterError, "_sort"),
        ("Observation?subject:Medication=1", InvalidValueError, "subject:Medication"),
    ],
)
def test_errors_name_the_parameter(search: str, error: type[Exception], named: str) -> None:
    with pytest.raises(error) as caught:
        parse_search(search)
    assert getattr(caught.value, "param", None) == named
    assert named.split(":")[0] in str(caught.value)


def test_lenient_mode_returns_warnings() -> None:
    result = parse_search("Patient?nonsense=1&family=smith&birthdate=bad", lenient=True)
    assert len(result.query.clauses) == 1
    assert len(result.warnings) == 2
    assert "nonsense" in result.warnings[0]
    assert "birthdate" in result.warnings[1]


def test_unknown_resource_type() -> None:
    with pytest.raises(UnknownParameterError):
        parse_search("Nothing?x=1")


def test_system_level_and_pairs() -> None:
    query = parse_params(None, [("_id", "a,b"), ("_lastUpdated", "gt2020")]).query
    assert query.resource_type is None
    assert len(query.clauses) == 2
    assert parse_search("Patient").query.resource_type == "Patient"


def test_absolute_reference_to_this_server_is_local() -> None:
    base = "https://fhir.example.org/fhir/R4/"
    query = parse_search(
        "Observation?subject=https://fhir.example.org/fhir/R4/Patient/1"
        "&performer=https://elsewhere.org/Practitioner/2",
        base_url=base,
    ).query
    subject, performer = query.clauses
    assert isinstance(subject, ParamClause) and isinstance(performer, ParamClause)
    assert subject.values == (ReferenceValue(ref_type="Patient", ref_id="1"),)
    assert performer.values == (ReferenceValue(url="https://elsewhere.org/Practitioner/2"),)


def test_composite_values() -> None:
    (composite,) = parse_search(
        "Observation?code-value-quantity=http://loinc.org|8480-6$gt140,8462-4$lt90"
    ).query.clauses
    assert isinstance(composite, CompositeClause)
    first, second = composite.values
    assert first.parts[0] == TokenValue("http://loinc.org", "8480-6")
    assert isinstance(first.parts[1], QuantityValue)
    assert first.parts[1].number.prefix == "gt"
    assert second.parts[0] == TokenValue(None, "8462-4")
    with pytest.raises(UnsupportedSearchError):
        parse_search("Observation?code-value-quantity:missing=true")
