"""The example bots in examples/bots/, run with the harness on real sample data."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.riskassessment import RiskAssessment
from fhir.resources.R4B.task import Task

from fhirbots.bots.gateway import CallContext
from fhirbots.bots.testing import BotHarness, InMemoryFhirGateway, make_bot
from tests.conftest import shared_path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bots"
SYNTHEA = shared_path() / "fhir-samples" / "synthea-r4"
LOADER = CallContext(project="default", bot="Bot/loader", execution_id="load", author="test")


def example(name: str, **fields: Any) -> Any:
    return make_bot((EXAMPLES / name).read_text(), name=name, **fields)


async def load_bundle(gateway: InMemoryFhirGateway, name: str) -> None:
    """Load one Synthea transaction bundle, resolving its urn:uuid references."""
    bundle = json.loads((SYNTHEA / name).read_text())
    await gateway.transaction(LOADER, bundle)


def first_patient(gateway: InMemoryFhirGateway) -> dict[str, Any]:
    (patient,) = gateway.all("Patient")
    return patient


# --- critical lab value -> Flag + Task -------------------------------------------------------

CRITICAL_SCOPES = [
    {"resourceType": "Flag", "interaction": ["search", "create"]},
    {"resourceType": "Task", "interaction": ["create"]},
]


def potassium(gateway: InMemoryFhirGateway) -> dict[str, Any]:
    for observation in gateway.all("Observation"):
        codes = [c["code"] for c in observation["code"]["coding"]]
        if "6298-4" in codes:
            return observation
    raise AssertionError("the sample has no potassium result")


async def test_critical_potassium_writes_a_valid_flag_and_task_once() -> None:
    gateway = InMemoryFhirGateway()
    await load_bundle(gateway, "Lavern_Kassulke_1b3c4971-6ef2-4a46-b7d7-f56c91d78135.json")
    observation = potassium(gateway)
    normal = observation["valueQuantity"]["value"]
    assert 2.5 <= normal <= 6.5  # Synthea's value is a normal one
    bot = example("critical_lab_flag.py", access=CRITICAL_SCOPES)
    async with BotHarness(gateway) as harness:
        quiet = await harness.run(bot, input=observation)
        assert quiet.output == {"critical": False}
        assert gateway.all("Flag") == []

        critical = copy.deepcopy(observation)
        critical["valueQuantity"]["value"] = 7.2
        first = await harness.run(bot, input=critical)
        assert first.status == "success", first.error
        assert first.output["text"] == "Critical high Potassium: 7.2 mmol/L"
        assert "WARNING Critical high Potassium" in first.logs
        (flag,) = gateway.all("Flag")
        (task,) = gateway.all("Task")
        Flag.model_validate(flag)
        Task.model_validate(task)
        assert flag["subject"] == observation["subject"]
        assert task["focus"]["reference"] == f"Observation/{observation['id']}"
        assert task["priority"] == "stat"
        assert first.output["flag"] == f"Flag/{flag['id']}"

        redelivered = await harness.run(bot, input=critical)
        assert redelivered.output["duplicate"] is True
        assert len(gateway.all("Flag")) == 1
        assert len(gateway.all("Task")) == 1


async def test_critical_low_glucose_and_ignored_statuses() -> None:
    gateway = InMemoryFhirGateway()
    glucose = {
        "resourceType": "Observation",
        "id": "g1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 31, "unit": "mg/dL"},
    }
    bot = example("critical_lab_flag.py", access=CRITICAL_SCOPES)
    async with BotHarness(gateway) as harness:
        cancelled = await harness.run(bot, input={**glucose, "status": "cancelled"})
        assert cancelled.output["critical"] is False
        low = await harness.run(bot, input=glucose)
        assert low.output["text"] == "Critical low Glucose: 31 mg/dL"
        wrong_input = await harness.run(bot, input={"resourceType": "Patient"})
        assert wrong_input.status == "error"
        assert "expected an Observation" in (wrong_input.error or "")


async def test_critical_bot_without_scopes_cannot_write() -> None:
    gateway = InMemoryFhirGateway()
    observation = {
        "resourceType": "Observation",
        "id": "k1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},
        "subject": {"reference": "Patient/p1"},
        "valueQuantity": {"value": 1.9, "unit": "mmol/L"},
    }
    bot = example(
        "critical_lab_flag.py", access=[{"resourceType": "Flag", "interaction": ["search"]}]
    )
    async with BotHarness(gateway) as harness:
        result = await harness.run(bot, input=observation)
    assert result.status == "error"
    assert "may not create Flag" in (result.error or "")
    assert gateway.all("Flag") == []


# --- CHA2DS2-VASc -> RiskAssessment --------------------------------------------------------------

RISK_SCOPES = [
    {"resourceType": "Patient", "interaction": ["read"]},
    {"resourceType": "Condition", "interaction": ["search"]},
    {"resourceType": "RiskAssessment", "interaction": ["search", "create", "update"]},
]


def years_ago(years: int) -> str:
    today = date.today()
    return today.replace(year=today.year - years, day=min(today.day, 28)).isoformat()


def condition(cid: str, code: str, status: str | None = "active") -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
    }
    if status:
        resource["clinicalStatus"] = {"coding": [{"code": status}]}
    return resource


async def test_risk_score_follows_the_published_points() -> None:
    gateway = InMemoryFhirGateway(
        [
            {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": years_ago(80)},
            condition("c-htn", "38341003"),
            condition("c-dm", "44054006", status="resolved"),
            condition("c-stroke", "230690007", status=None),
            condition("c-flu", "6142004"),
        ]
    )
    bot = example("cha2ds2_vasc_risk.py", access=RISK_SCOPES)
    async with BotHarness(gateway) as harness:
        result = await harness.run(bot, input={"patient": "p1"})
        assert result.status == "success", result.error
        # female 1 + age >= 75 2 + hypertension 1 + stroke 2; resolved diabetes does not count
        assert result.output["criteria"] == {
            "female": 1,
            "age-75-or-over": 2,
            "hypertension": 1,
            "stroke-tia": 2,
        }
        assert result.output["score"] == 6
        (assessment,) = gateway.all("RiskAssessment")
        RiskAssessment.model_validate(assessment)
        assert {b["reference"] for b in assessment["basis"]} == {
            "Condition/c-htn",
            "Condition/c-stroke",
        }
        assert assessment["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "high"

        again = await harness.run(bot, input=condition("c-htn", "38341003"))
        assert again.output["riskAssessment"] == result.output["riskAssessment"]
        (updated,) = gateway.all("RiskAssessment")
        assert updated["meta"]["versionId"] == "2"


@pytest.mark.parametrize(
    "bundle",
    [
        "Christopher_Abshire_028250cc-cfc0-4dee-a771-78fde1275fcb.json",
        "Lavern_Kassulke_1b3c4971-6ef2-4a46-b7d7-f56c91d78135.json",
        "Renea_Quigley_4f3dd2db-ca68-4d9d-a06b-f145db0b0453.json",
    ],
)
async def test_risk_score_on_synthea_patients(bundle: str) -> None:
    gateway = InMemoryFhirGateway()
    await load_bundle(gateway, bundle)
    patient = first_patient(gateway)
    bot = example("cha2ds2_vasc_risk.py", access=RISK_SCOPES)
    async with BotHarness(gateway) as harness:
        result = await harness.run(bot, input=patient)
    assert result.status == "success", result.error
    criteria = result.output["criteria"]
    assert result.output["score"] == sum(criteria.values())
    assert ("female" in criteria) == (patient["gender"] == "female")
    active_codes = {
        coding["code"]
        for c in gateway.all("Condition")
        if c.get("clinicalStatus", {}).get("coding", [{}])[0].get("code") == "active"
        for coding in c["code"]["coding"]
    }
    assert ("hypertension" in criteria) == ("38341003" in active_codes)
    assert ("stroke-tia" in criteria) == ("230690007" in active_codes)
    (assessment,) = gateway.all("RiskAssessment")
    RiskAssessment.model_validate(assessment)
    for basis in assessment["basis"]:
        kind, _, cid = basis["reference"].partition("/")
        assert gateway.get(kind, cid) is not None


# --- HL7 v2 ADT^A01 -> Patient + Encounter -------------------------------------------------------

ADT_SCOPES = [
    {"resourceType": "Patient", "interaction": ["search", "create", "update"]},
    {"resourceType": "Encounter", "interaction": ["search", "create", "update"]},
]

ADT_A01 = "\r".join(
    [
        "MSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|GHH LAB|GHH|202401151230||ADT^A01^ADT_A01|"
        "MSG00001|P|2.5",
        "EVN|A01|202401151225",
        "PID|1||PATID1234^^^GHH^MR||Everywoman^Eve^E||19620320|F|||"
        "2222 Home Street^^Greensboro^NC^27401-1020^USA||(555)555-2004",
        "PV1|1|I|2000^2012^01||||004777^Attend^Aaron^A|||SUR||||ADM|A0||||V100^^^GHH",
    ]
)


async def test_adt_a01_becomes_patient_and_encounter_idempotently() -> None:
    gateway = InMemoryFhirGateway()
    bot = example("hl7v2_adt_a01.py", access=ADT_SCOPES)
    async with BotHarness(gateway) as harness:
        result = await harness.run(bot, input=ADT_A01, content_type="x-application/hl7-v2+er7")
        assert result.status == "success", result.error
        (patient,) = gateway.all("Patient")
        (encounter,) = gateway.all("Encounter")
        Patient.model_validate(patient)
        Encounter.model_validate(encounter)
        assert patient["identifier"][0]["value"] == "PATID1234"
        assert patient["identifier"][0]["system"] == "urn:hl7v2:GHH"
        assert patient["name"][0] == {
            "use": "official",
            "family": "Everywoman",
            "given": ["Eve", "E"],
        }
        assert (patient["birthDate"], patient["gender"]) == ("1962-03-20", "female")
        assert patient["address"][0]["city"] == "Greensboro"
        assert patient["telecom"][0]["value"] == "(555)555-2004"
        assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
        assert encounter["class"]["code"] == "IMP"
        assert encounter["identifier"][0]["value"] == "V100"
        assert encounter["period"]["start"] == "2024-01-15T12:25:00+00:00"
        assert encounter["location"][0]["location"]["display"] == "2000 2012 01"
        assert encounter["participant"][0]["individual"]["display"] == "Aaron Attend"
        assert result.output["patient"] == f"Patient/{patient['id']}"
        assert result.output["ack"].endswith("MSA|AA|MSG00001")

        repeat = await harness.run(bot, input=ADT_A01)
        assert repeat.output == result.output
        assert len(gateway.all("Patient")) == 1
        assert len(gateway.all("Encounter")) == 1

        second_visit = ADT_A01.replace("V100", "V200").replace("MSG00001", "MSG00002")
        zoned = make_bot(bot.code, access=ADT_SCOPES, secret=["HL7_SENDER_TIMEZONE"])
        other = await harness.run(
            zoned, input=second_visit, secrets={"HL7_SENDER_TIMEZONE": "America/New_York"}
        )
        assert other.output["patient"] == result.output["patient"]
        assert len(gateway.all("Encounter")) == 2
        visit = gateway.get("Encounter", other.output["encounter"].split("/")[1])
        assert visit is not None and visit["period"]["start"] == "2024-01-15T12:25:00-05:00"

        offset = ADT_A01.replace("EVN|A01|202401151225", "EVN|A01|202407011225+0200")
        summer = await harness.run(bot, input=offset.replace("V100", "V300"))
        visit = gateway.get("Encounter", summer.output["encounter"].split("/")[1])
        assert visit is not None and visit["period"]["start"] == "2024-07-01T12:25:00+02:00"


async def test_adt_bot_refuses_other_messages() -> None:
    bot = example("hl7v2_adt_a01.py", access=ADT_SCOPES)
    async with BotHarness() as harness:
        wrong = await harness.run(bot, input=ADT_A01.replace("ADT^A01^ADT_A01", "ORU^R01"))
        garbage = await harness.run(bot, input="hello")
    assert "expected ADT^A01, got ORU^R01" in (wrong.error or "")
    assert "no MSH segment" in (garbage.error or "")
