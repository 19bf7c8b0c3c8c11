"""Implicit code systems of bound ``code`` elements (generated table)."""

from __future__ import annotations

from fhirbots.subscriptions.search import default_registry
from fhirbots.subscriptions.search.implicit import implicit_system, implicit_systems


def _param(resource_type: str, code: str):  # type: ignore[no-untyped-def]
    param = default_registry().get(resource_type, code)
    assert param is not None
    return param


def test_required_bound_codes_have_their_code_system() -> None:
    assert implicit_system(_param("Patient", "gender")) == (
        "http://hl7.org/fhir/administrative-gender"
    )
    assert implicit_system(_param("Observation", "status")) == (
        "http://hl7.org/fhir/observation-status"
    )
    assert implicit_system(_param("Bundle", "type")) == "http://hl7.org/fhir/bundle-type"


def test_codings_and_non_token_parameters_have_none() -> None:
    assert implicit_system(_param("Observation", "code")) is None
    assert implicit_system(_param("Patient", "name")) is None


def test_the_table_covers_element_paths_only() -> None:
    table = implicit_systems()
    assert len(table) > 100
    assert all("." in path and system.startswith("http") for path, system in table.items())
