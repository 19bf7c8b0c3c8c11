"""Tests of the generated SearchParameter registry."""

from __future__ import annotations

import json
from pathlib import Path

from fhirbots.subscriptions.search.generate_registry import OUTPUT_PATH, generate
from fhirbots.subscriptions.search.registry import (
    Registry,
    default_registry,
    narrow_expression,
    split_union,
)


def test_generated_file_is_reproducible(shared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "params.json"
    count = generate(shared_dir / "fhir" / "search-parameters.json", out)
    source = json.loads((shared_dir / "fhir" / "search-parameters.json").read_text())
    assert count == len(source["entry"])
    assert out.read_text() == OUTPUT_PATH.read_text()


def test_lookup_resolves_type_and_narrows_union() -> None:
    reg = default_registry()
    name = reg.get("Patient", "name")
    assert name is not None
    assert name.type == "string"
    assert name.expression == "Patient.name"
    assert reg.get("Person", "name") is not None
    code = reg.get("Observation", "code")
    assert code is not None
    assert code.expression == "Observation.code"
    assert code.url == "http://hl7.org/fhir/SearchParameter/clinical-code"


def test_common_parameters_apply_to_every_type() -> None:
    reg = default_registry()
    for resource_type in ("Patient", "Observation", "Bundle"):
        last = reg.get(resource_type, "_lastUpdated")
        assert last is not None
        assert last.type == "date"
        assert last.expression == f"{resource_type}.meta.lastUpdated"
    assert "_id" in set(reg.codes("Encounter"))


def test_reference_targets_and_modifiers() -> None:
    subject = default_registry().get("Observation", "subject")
    assert subject is not None
    assert set(subject.targets) == {"Group", "Device", "Patient", "Location"}
    assert "identifier" in subject.modifiers
    assert "missing" in subject.modifiers


def test_unknown_parameter_is_none() -> None:
    assert default_registry().get("Patient", "no-such-thing") is None


def test_special_and_root_dependent_composites_are_listed_unsupported() -> None:
    unsupported = default_registry().unsupported()
    kinds = {(p.resource_type, p.code) for p in unsupported}
    assert ("Location", "near") in kinds
    assert ("MolecularSequence", "chromosome-variant-coordinate") in kinds  # uses %resource
    assert ("Observation", "code-value-quantity") not in kinds
    assert all(not p.supported for p in unsupported)


def test_composite_components_have_their_types() -> None:
    composite = default_registry().get("Observation", "component-code-value-quantity")
    assert composite is not None
    assert composite.supported
    assert composite.expression == "Observation.component"
    assert composite.component_types == ("token", "quantity")
    assert [expr for _, expr in composite.components] == ["code", "value.as(Quantity)"]


def test_split_union_respects_parentheses_and_quotes() -> None:
    expr = "(A.value as Quantity) | A.x.where(system='a|b') | A.y"
    assert split_union(expr) == ["(A.value as Quantity)", "A.x.where(system='a|b')", "A.y"]


def test_narrow_expression_rewrites_abstract_bases() -> None:
    assert narrow_expression("Resource.meta.tag", "Patient") == "Patient.meta.tag"
    assert narrow_expression("Patient.name | Person.name", "Person") == "Person.name"
    assert narrow_expression("name | alias", "InsurancePlan") == "name | alias"
    assert narrow_expression(None, "Patient") is None


def test_registry_from_custom_entries() -> None:
    reg = Registry([{"code": "x", "type": "token", "base": ["Basic"], "expression": "Basic.code"}])
    param = reg.get("Basic", "x")
    assert param is not None
    assert param.expression == "Basic.code"
    assert reg.resource_types == frozenset({"Basic"})


def test_default_registry_knows_the_custom_bot_resource() -> None:
    reg = default_registry()
    assert "Bot" in reg.resource_types
    name = reg.get("Bot", "name")
    assert name is not None
    assert name.type == "string"
    assert "exact" in name.modifiers
    last = reg.get("Bot", "_lastUpdated")
    assert last is not None
    assert last.expression == "Bot.meta.lastUpdated"
