"""Scopes through search: whatever a search returns or tests must be inside the caller's scope.

The rules are checked on parsed queries (many variants), then through the engine's real search
service, the bots' gateway and Bundles, on both storage engines, with a Patient and a Flag
pointing at it: a Flag-only caller must get 403 and none of the Patient's data.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from fhirbots.bots.errors import FhirGatewayError
from fhirbots.bots.gateway import CallContext
from fhirbots.engine.automation.engine_gateway import EngineFhirGateway
from fhirbots.engine.errors import Forbidden
from fhirbots.engine.fhir.bundles import process_bundle
from fhirbots.engine.fhir.scopes import Scope, check_search, scoped, visible
from fhirbots.engine.fhir.typed_search import search_types
from fhirbots.engine.runtime import Engine
from fhirbots.engine.storage.model import StoredResource, WriteContext
from fhirbots.engine.web.auth import KeyScope, Principal
from fhirbots.schemas.bot import AccessScope, Bot
from fhirbots.subscriptions.search import default_registry, parse_params
from tests.engine.scenarios.bots import PROJECT

SECRET_NAME = "Zyxwvut"
"""The Patient's family name: must never reach a Flag-only caller."""


def flag_only(resource_type: str, interaction: str) -> bool:
    return resource_type == "Flag"


FLAG_ONLY = Scope("Bot/flags", flag_only)


def _pair(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name, value


def _query(resource_type: str | None, text: str) -> Any:
    pairs = [_pair(p) for p in text.split("&") if p]
    return parse_params(resource_type, pairs, registry=default_registry()).query


REFUSED = [
    ("Patient", "name=x"),
    ("Observation", ""),
    (None, ""),  # system-level search
    (None, "_id=1"),
    ("Flag", "subject:Patient.name=x"),
    ("Flag", "patient.name=x"),
    ("Flag", "patient.birthdate=ge2000"),
    ("Flag", "subject:Patient.organization.name=x"),  # chain through Patient to Organization
    ("Flag", "subject:Group.code=x"),
    ("Flag", "author:Practitioner.name=x"),
    ("Flag", "encounter:Encounter.status=finished"),
    ("Flag", "patient._id=p1"),
    ("Flag", "patient:missing=false&subject:Patient.gender=female"),
    ("Flag", "_has:DetectedIssue:implicated:code=1"),
    ("Flag", "_has:Composition:entry:_has:Provenance:target:agent=Practitioner/1"),
    ("Flag", "_has:AuditEvent:entity:type=x"),
    ("Flag", "_has:Provenance:target:agent=Practitioner/1"),
    ("Flag", "_include=Flag:subject"),
    ("Flag", "_include=Flag:patient"),
    ("Flag", "_include=Flag:subject:Patient"),
    ("Flag", "_include=Flag:*"),
    ("Flag", "_include:iterate=Flag:subject"),
    ("Flag", "_include=Flag:author"),
    ("Flag", "_include=Observation:subject"),
    ("Flag", "_revinclude=Provenance:target"),
    ("Flag", "_revinclude=AuditEvent:entity"),
    ("Flag", "_revinclude:iterate=Observation:focus"),
    ("Flag", "date=ge2020&_revinclude=Provenance:target&_elements=code"),
]

ALLOWED = [
    ("Flag", ""),
    ("Flag", "date=ge2020-01-01"),
    ("Flag", "subject=Patient/p1"),  # the Flag's own reference, not the Patient's data
    ("Flag", "patient=p1"),
    ("Flag", "subject:Patient=p1"),
    ("Flag", "patient:missing=true"),
    ("Flag", "_id=f1&_elements=code,subject"),
    ("Flag", "_summary=count"),
    ("Flag", "_sort=-date&_count=5&_total=accurate"),
    ("Flag", "_include=Flag:subject:Flag"),
    ("Flag", "_revinclude=Flag:subject"),
    ("Flag", "_lastUpdated=ge2020-01-01&_tag=urn:t|x"),
]


@pytest.mark.parametrize(("resource_type", "text"), REFUSED)
def test_queries_reaching_other_types_are_refused(resource_type: str | None, text: str) -> None:
    query = _query(resource_type, text)
    with pytest.raises(Forbidden) as caught:
        check_search(query, default_registry(), FLAG_ONLY)
    assert caught.value.status == 403
    assert "Bot/flags may not search" in caught.value.message


@pytest.mark.parametrize(("resource_type", "text"), ALLOWED)
def test_queries_inside_the_scope_pass(resource_type: str, text: str) -> None:
    check_search(_query(resource_type, text), default_registry(), FLAG_ONLY)


def test_the_refusal_names_the_type_the_parameter_and_the_scope() -> None:
    with pytest.raises(Forbidden) as caught:
        check_search(_query("Flag", "subject:Patient.name=x"), default_registry(), FLAG_ONLY)
    message = caught.value.message
    assert "Patient" in message and "subject:Patient.name" in message
    assert '"interaction": ["search"]' in message
    with pytest.raises(Forbidden, match="name the target type"):
        check_search(_query("Flag", "_include=Flag:subject"), default_registry(), FLAG_ONLY)


def test_a_wider_scope_allows_what_it_names() -> None:
    bot = Bot(
        name="b",
        code="def handler(fhir, event):\n    pass\n",
        access=(
            AccessScope(resource_type="Flag", interaction=("search",)),
            AccessScope(resource_type="Patient", interaction=("search", "read")),
        ),
    )
    scope = Scope("Bot/b", bot.allows)
    check_search(_query("Flag", "subject:Patient.name=x"), default_registry(), scope)
    check_search(_query("Flag", "_include=Flag:subject:Patient"), default_registry(), scope)
    with pytest.raises(Forbidden):  # subject may also point to Group, Device ...
        check_search(_query("Flag", "_include=Flag:subject"), default_registry(), scope)
    everything = Scope("Bot/all", Bot(name="a", code="x = 1\n", access=None).allows)
    check_search(_query(None, ""), default_registry(), everything)


def test_key_scopes() -> None:
    read_only = KeyScope(interactions=frozenset({"read", "search"}))
    assert read_only.allows("Patient", "search") and not read_only.allows("Patient", "create")
    assert read_only.allows("*", "search")
    flags = KeyScope(resource_types=frozenset({"Flag"}))
    assert flags.allows("Flag", "create") and not flags.allows("*", "search")
    principal = Principal("k1", PROJECT, False, flags)
    scope = principal.search_scope()
    assert scope is not None and scope.holder == "ApiKey/k1"
    assert Principal("k2", PROJECT, False).search_scope() is None
    with pytest.raises(Forbidden, match="ApiKey/k1"):
        check_search(_query("Flag", "patient.name=x"), default_registry(), scope)


def test_visible_filters_included_resources() -> None:
    rows = [
        StoredResource("Flag", "f", 1, None, False, {}),  # type: ignore[arg-type]
        StoredResource("Patient", "p", 1, None, False, {}),  # type: ignore[arg-type]
    ]
    assert [r.resource_type for r in visible(rows, FLAG_ONLY)] == ["Flag"]
    assert visible(rows) == rows  # no scope in force


# -- through the engine, on both storage engines ----------------------------------------------


async def _seed(engine: Engine) -> tuple[str, str]:
    context = WriteContext(author="ApiKey/test")
    patient = {"resourceType": "Patient", "name": [{"family": SECRET_NAME}], "gender": "female"}
    stored = (await engine.fhir.create(PROJECT, patient, context)).stored
    assert stored is not None
    flag = {
        "resourceType": "Flag",
        "status": "active",
        "code": {"text": "fall risk"},
        "subject": {"reference": f"Patient/{stored.id}"},
    }
    flag_stored = (await engine.fhir.create(PROJECT, flag, context)).stored
    assert flag_stored is not None
    return stored.id, flag_stored.id


def _context(allows: Any) -> CallContext:
    return CallContext(
        project=PROJECT, bot="Bot/flags", execution_id="x1", author="Bot/flags", allows=allows
    )


def _leaks(value: Any, patient_id: str) -> bool:
    text = orjson.dumps(value).decode()
    return SECRET_NAME in text or f'"id":"{patient_id}"' in text


async def test_search_service_refuses_under_the_current_scope(engine: Engine) -> None:
    patient_id, _ = await _seed(engine)
    for text in (
        f"subject:Patient.name={SECRET_NAME}",
        "_include=Flag:subject",
        "_has:DetectedIssue:implicated:code=1&_include=Flag:patient:Patient",
    ):
        pairs = [_pair(p) for p in text.split("&")]
        with scoped(FLAG_ONLY), pytest.raises(Forbidden):
            await engine.search.search(PROJECT, "Flag", pairs)
    # Unscoped, the same include returns the Patient (so the refusal above is what hid it).
    result = await engine.search.search(PROJECT, "Flag", [("_include", "Flag:subject")])
    assert [r.id for r in result.included] == [patient_id]
    # Conditional create searches under the scope too.
    flag = {
        "resourceType": "Flag",
        "status": "active",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    with scoped(FLAG_ONLY), pytest.raises(Forbidden):
        await engine.fhir.create(
            PROJECT, flag, WriteContext(author="x"), if_none_exist=f"patient.name={SECRET_NAME}"
        )


@pytest.mark.parametrize(
    "params",
    [
        {"subject:Patient.name": SECRET_NAME},
        {"patient.name": SECRET_NAME},
        {"_include": "Flag:subject"},
        {"_include": "Flag:subject:Patient"},
        {"_include:iterate": "Flag:*"},
        {"_revinclude": "Provenance:target"},
        {"_has:DetectedIssue:implicated:code": "1"},
        {"date": "ge2000", "_include": ["Flag:patient", "Flag:subject:Flag"]},
    ],
)
async def test_bot_searches_are_refused_and_leak_nothing(
    engine: Engine, params: dict[str, Any]
) -> None:
    patient_id, flag_id = await _seed(engine)
    gateway = EngineFhirGateway(engine.fhir, engine.search, engine._get_url, "http://h/fhir/R4")
    with pytest.raises(FhirGatewayError) as caught:
        await gateway.search(_context(flag_only), "Flag", params)
    assert caught.value.status == 403
    assert not _leaks(caught.value.outcome, patient_id)
    allowed = await gateway.search(_context(flag_only), "Flag", {"_id": flag_id})
    assert [e["resource"]["id"] for e in allowed["entry"]] == [flag_id]


async def test_bundle_search_entries_are_checked(engine: Engine) -> None:
    patient_id, flag_id = await _seed(engine)
    gateway = EngineFhirGateway(engine.fhir, engine.search, engine._get_url, "http://h/fhir/R4")
    entries = [
        {"request": {"method": "GET", "url": f"Flag?_id={flag_id}"}},
        {"request": {"method": "GET", "url": f"Flag?subject:Patient.name={SECRET_NAME}"}},
        {"request": {"method": "GET", "url": "Flag?_include=Flag:subject"}},
        {
            "request": {
                "method": "GET",
                "url": f"Flag?_has:DetectedIssue:implicated:code=1&_id={flag_id}",
            }
        },
    ]
    batch = await gateway.transaction(
        _context(flag_only), {"resourceType": "Bundle", "type": "batch", "entry": entries}
    )
    statuses = [e["response"]["status"] for e in batch["entry"]]
    assert statuses == ["200 OK", "403", "403", "403"]
    assert not _leaks(batch["entry"][1:], patient_id)
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": entries[1:2]}
    with pytest.raises(FhirGatewayError) as caught:
        await gateway.transaction(_context(flag_only), transaction)
    assert caught.value.status == 403
    # The REST handler's path (process_bundle under a key's scope) is the same function.
    key = Principal("k1", PROJECT, False, KeyScope(resource_types=frozenset({"Flag"})))
    with scoped(key.search_scope()):
        answered = await process_bundle(
            engine.fhir,
            PROJECT,
            {"resourceType": "Bundle", "type": "batch", "entry": entries[2:3]},
            WriteContext(author=key.author),
            get=engine._get_url,
        )
    assert answered["entry"][0]["response"]["status"] == "403"
    assert not _leaks(answered, patient_id)


async def test_system_search_with_type_checks_each_type(engine: Engine) -> None:
    patient_id, flag_id = await _seed(engine)
    with scoped(FLAG_ONLY):
        found = await search_types(engine.search, PROJECT, ["Flag"], [("_id", flag_id)])
        assert [m.id for m in found.matches] == [flag_id]
        with pytest.raises(Forbidden, match="Patient"):
            await search_types(engine.search, PROJECT, ["Flag", "Patient"], [("_id", patient_id)])
