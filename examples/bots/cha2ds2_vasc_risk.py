"""Compute a CHA2DS2-VASc stroke-risk score into a RiskAssessment.

Trigger: a Subscription on ``Condition`` (create/update) or ``Patient`` changes, or a cron
schedule; ``event.input`` is a Patient, a Condition, or ``{"patient": "<id>"}``.

Access scopes: Patient read; Condition search; RiskAssessment search/create/update.

Points (Lip et al., Chest 2010): congestive heart failure 1, hypertension 1, age >= 75 2,
diabetes 1, stroke/TIA/thromboembolism 2, vascular disease (MI, coronary or peripheral artery
disease) 1, age 65-74 1, female sex 1. Conditions are matched by SNOMED CT code; only active
ones count (a Condition with no clinicalStatus counts, as in Synthea data). Each patient has
one RiskAssessment (identified by the patient id) that is updated in place.
"""

from datetime import date

from fhirbots import logger

SNOMED = "http://snomed.info/sct"
METHOD_SYSTEM = "urn:fhirbots:risk"
METHOD_CODE = "CHA2DS2-VASc"

# criterion -> (points, SNOMED CT codes)
CRITERIA = {
    "congestive-heart-failure": (1, {"88805009", "84114007", "42343007", "85232009"}),
    "hypertension": (1, {"38341003", "59621000", "1201005"}),
    "diabetes": (1, {"44054006", "73211009", "46635009", "127013003"}),
    "stroke-tia": (2, {"230690007", "266257000", "422504002", "432504007"}),
    "vascular-disease": (1, {"22298006", "399211009", "53741008", "399957001", "414545008"}),
}

# Adjusted annual stroke rate (%) by score (Lip et al. 2010, as tabled in the ESC 2010 guidelines).
ANNUAL_STROKE_RISK = [0.0, 1.3, 2.2, 3.2, 4.0, 6.7, 9.8, 9.6, 6.7, 15.2]


def age_on(birth_date, today):
    born = date.fromisoformat(birth_date[:10])
    before_birthday = (today.month, today.day) < (born.month, born.day)
    return today.year - born.year - (1 if before_birthday else 0)


def is_active(condition):
    status = condition.get("clinicalStatus")
    if not status:
        return True
    codes = [c.get("code") for c in status.get("coding") or []]
    return any(code in ("active", "recurrence", "relapse") for code in codes)


def snomed_codes(condition):
    codings = (condition.get("code") or {}).get("coding") or []
    return {c.get("code") for c in codings if c.get("system") == SNOMED}


def patient_id_of(value):
    kind = value.get("resourceType")
    if kind == "Patient":
        return value["id"]
    if kind == "Condition":
        return value["subject"]["reference"].split("/")[-1]
    return value["patient"]


def score(patient, conditions, today):
    """(total, matched criteria, Condition references used as evidence)."""
    matched = {}
    evidence = []
    for condition in conditions:
        if not is_active(condition):
            continue
        codes = snomed_codes(condition)
        for criterion, (points, wanted) in CRITERIA.items():
            if codes & wanted:
                if criterion not in matched:
                    matched[criterion] = points
                evidence.append("Condition/" + condition["id"])
    age = age_on(patient["birthDate"], today) if patient.get("birthDate") else None
    if age is not None and age >= 75:
        matched["age-75-or-over"] = 2
    elif age is not None and age >= 65:
        matched["age-65-to-74"] = 1
    if patient.get("gender") == "female":
        matched["female"] = 1
    return sum(matched.values()), matched, sorted(set(evidence))


def handler(fhir, event):
    patient_id = patient_id_of(event.input)
    patient = fhir.read("Patient", patient_id)
    bundle = fhir.search("Condition", {"patient": patient_id, "_count": 1000})
    conditions = [entry["resource"] for entry in bundle.get("entry") or []]
    today = date.today()
    total, matched, evidence = score(patient, conditions, today)
    risk = ANNUAL_STROKE_RISK[min(total, len(ANNUAL_STROKE_RISK) - 1)]
    if total >= 2:
        level = "high"
    elif total == 1:
        level = "moderate"
    else:
        level = "low"

    assessment = {
        "resourceType": "RiskAssessment",
        "identifier": [{"system": METHOD_SYSTEM, "value": METHOD_CODE + "/" + patient_id}],
        "status": "final",
        "method": {"coding": [{"system": METHOD_SYSTEM, "code": METHOD_CODE}]},
        "subject": {"reference": "Patient/" + patient_id},
        "occurrenceDateTime": today.isoformat(),
        "basis": [{"reference": ref} for ref in evidence],
        "prediction": [
            {
                "outcome": {"text": "Ischemic stroke within one year"},
                "probabilityDecimal": risk / 100,
                "qualitativeRisk": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/risk-probability",
                            "code": level,
                        }
                    ]
                },
            }
        ],
        "note": [
            {
                "text": f"{METHOD_CODE} score {total} ("
                + ", ".join(f"{k} +{v}" for k, v in sorted(matched.items()))
                + ")"
            }
        ],
    }
    existing = fhir.search_one(
        "RiskAssessment", {"identifier": f"{METHOD_SYSTEM}|{METHOD_CODE}/{patient_id}"}
    )
    if existing is None:
        stored = fhir.create(assessment)
    else:
        assessment["id"] = existing["id"]
        stored = fhir.update(assessment)
    logger.info("Patient/%s %s=%d", patient_id, METHOD_CODE, total)
    return {
        "riskAssessment": "RiskAssessment/" + stored["id"],
        "score": total,
        "criteria": matched,
    }
