"""Flag a critical laboratory value: write a Flag and a Task for the care team.

Trigger: a Subscription on ``Observation?category=laboratory`` (create/update) delivering the
Observation as ``event.input``.

Access scopes: Observation read; Flag search/create; Task create.

For a critical value (outside the limits below) the bot writes
- a ``Flag`` (status active, category clinical) on the patient, and
- a ``Task`` (intent order, priority stat) asking someone to act on the result.
Both carry an identifier derived from the Observation id and version, so a redelivery of the
same event (delivery is at-least-once) finds the existing Flag and writes nothing twice.
"""

from fhirbots import logger

LOINC = "http://loinc.org"
FLAG_SYSTEM = "urn:fhirbots:critical-lab"

# LOINC code -> (name, unit, critical low, critical high); typical hospital critical limits.
CRITICAL_LIMITS = {
    "2823-3": ("Potassium", "mmol/L", 2.5, 6.5),
    "6298-4": ("Potassium", "mmol/L", 2.5, 6.5),
    "2951-2": ("Sodium", "mmol/L", 120.0, 160.0),
    "2947-0": ("Sodium", "mmol/L", 120.0, 160.0),
    "2345-7": ("Glucose", "mg/dL", 40.0, 450.0),
    "2339-0": ("Glucose", "mg/dL", 40.0, 450.0),
    "718-7": ("Hemoglobin", "g/dL", 7.0, 20.0),
    "17861-6": ("Calcium", "mg/dL", 6.0, 13.0),
}


def critical_finding(observation):
    """(name, value, unit, direction) if the observation is critical, else None."""
    quantity = observation.get("valueQuantity") or {}
    value = quantity.get("value")
    if value is None:
        return None
    for coding in (observation.get("code") or {}).get("coding") or []:
        if coding.get("system") != LOINC or coding.get("code") not in CRITICAL_LIMITS:
            continue
        name, unit, low, high = CRITICAL_LIMITS[coding["code"]]
        if quantity.get("unit", unit) != unit and quantity.get("code", unit) != unit:
            logger.warning("%s in unexpected unit %s, skipped", name, quantity.get("unit"))
            return None
        if value < low:
            return (name, value, unit, "low")
        if value > high:
            return (name, value, unit, "high")
    return None


def handler(fhir, event):
    observation = event.input
    if not observation or observation.get("resourceType") != "Observation":
        raise ValueError("expected an Observation as input")
    if observation.get("status") in ("cancelled", "entered-in-error"):
        return {"critical": False, "reason": "status " + observation["status"]}
    finding = critical_finding(observation)
    if finding is None:
        return {"critical": False}
    name, value, unit, direction = finding
    version = (observation.get("meta") or {}).get("versionId", "1")
    key = f"Observation/{observation['id']}/_history/{version}"
    existing = fhir.search_one("Flag", {"identifier": f"{FLAG_SYSTEM}|{key}"})
    if existing is not None:
        logger.info("critical %s already flagged as Flag/%s", name, existing["id"])
        return {"critical": True, "flag": "Flag/" + existing["id"], "duplicate": True}

    subject = observation.get("subject")
    text = f"Critical {direction} {name}: {value} {unit}"
    issued = observation.get("issued") or observation.get("effectiveDateTime")
    flag = {
        "resourceType": "Flag",
        "identifier": [{"system": FLAG_SYSTEM, "value": key}],
        "status": "active",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                        "code": "clinical",
                        "display": "Clinical",
                    }
                ]
            }
        ],
        "code": {"text": text},
        "subject": subject,
    }
    if issued:
        flag["period"] = {"start": issued}
    if observation.get("encounter"):
        flag["encounter"] = observation["encounter"]
    flag = fhir.create(flag)

    task = fhir.create(
        {
            "resourceType": "Task",
            "identifier": [{"system": FLAG_SYSTEM, "value": key}],
            "status": "requested",
            "intent": "order",
            "priority": "stat",
            "code": {"text": "Review critical laboratory result"},
            "description": text + ". Notify the responsible clinician.",
            "focus": {"reference": f"Observation/{observation['id']}"},
            "for": subject,
            "authoredOn": issued,
        }
    )
    logger.warning(text)
    return {
        "critical": True,
        "flag": "Flag/" + flag["id"],
        "task": "Task/" + task["id"],
        "text": text,
    }
