"""Turn an HL7 v2 ADT^A01 (admit) message into a Patient and an Encounter.

Trigger: a POST of the raw message to ``Bot/<id>/$execute`` with content type
``x-application/hl7-v2+er7``; ``event.input`` is the message text.

Access scopes: Patient search/create/update; Encounter search/create/update.
Secret (optional): ``HL7_SENDER_TIMEZONE``, the IANA zone of timestamps sent without offset
(default UTC).

The Patient is matched on its PID-3 identifier and updated, or created; the Encounter is
matched on its visit number (PV1-19) and updated, or created. Both writes go in one
transaction. The output carries an HL7 ACK (``MSA|AA|<control id>``) for the sender.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

from fhirbots import logger

ESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}
GENDERS = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown"}
# PV1-2 patient class -> v3 ActCode encounter class
CLASSES = {
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "E": ("EMER", "emergency"),
    "P": ("PRENC", "pre-admission"),
    "R": ("AMB", "ambulatory"),
    "B": ("IMP", "inpatient encounter"),
}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def unescape(text):
    if "\\" not in text:
        return text
    out = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            end = text.find("\\", i + 1)
            if end > i + 1 and text[i + 1 : end] in ESCAPES:
                out.append(ESCAPES[text[i + 1 : end]])
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def parse(message):
    """{segment id: [fields, ...]} with fields 1-based like the HL7 spec (MSH-1 is '|')."""
    segments = {}
    for line in message.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        line = line.strip()
        if not line:
            continue
        name = line[:3]
        # MSH-1 is the field separator itself, so MSH fields are shifted by one.
        fields = ["MSH", "|", *line[4:].split("|")] if name == "MSH" else line.split("|")
        if name not in segments:
            segments[name] = fields
    if "MSH" not in segments:
        raise ValueError("not an HL7 v2 message: no MSH segment")
    return segments


def field(segments, name, number, component=1):
    fields = segments.get(name) or []
    if number >= len(fields):
        return ""
    value = fields[number].split("~")[0]
    parts = value.split("^")
    if component > len(parts):
        return ""
    return unescape(parts[component - 1])


def hl7_date(value):
    """'19620320' -> '1962-03-20' (None if too short)."""
    if len(value) < 8:
        return None
    return f"{value[0:4]}-{value[4:6]}-{value[6:8]}"


def hl7_datetime(value, zone):
    """'202401151225' or '202401151225+0100' -> FHIR dateTime with offset.

    A timestamp without offset is read in the sender's time zone ``zone``.
    """
    digits, sign, offset = value, "", ""
    for mark in ("+", "-"):
        if mark in value:
            digits, offset = value.split(mark, 1)
            sign = mark
    digits = digits.split(".")[0]
    if len(digits) < 12:
        return hl7_date(digits)
    seconds = digits[12:14] or "00"
    if sign:
        moment = datetime.strptime(digits[:12] + seconds + sign + offset[:4], "%Y%m%d%H%M%S%z")
    else:
        moment = datetime.strptime(digits[:12] + seconds, "%Y%m%d%H%M%S")
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.isoformat()


def patient_from(segments):
    mrn = field(segments, "PID", 3)
    if not mrn:
        raise ValueError("PID-3 (patient identifier) is empty")
    system = "urn:hl7v2:" + (field(segments, "PID", 3, 4) or "local")
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                    ]
                },
                "system": system,
                "value": mrn,
            }
        ],
        "active": True,
    }
    family = field(segments, "PID", 5, 1)
    given = [g for g in (field(segments, "PID", 5, 2), field(segments, "PID", 5, 3)) if g]
    if family or given:
        patient["name"] = [{"use": "official", "family": family, "given": given}]
    birth = hl7_date(field(segments, "PID", 7))
    if birth:
        patient["birthDate"] = birth
    sex = field(segments, "PID", 8)
    if sex:
        patient["gender"] = GENDERS.get(sex, "unknown")
    street = field(segments, "PID", 11, 1)
    if street:
        patient["address"] = [
            {
                "line": [street],
                "city": field(segments, "PID", 11, 3),
                "state": field(segments, "PID", 11, 4),
                "postalCode": field(segments, "PID", 11, 5),
                "country": field(segments, "PID", 11, 6),
            }
        ]
    phone = field(segments, "PID", 13)
    if phone:
        patient["telecom"] = [{"system": "phone", "value": phone, "use": "home"}]
    return patient, system, mrn


def encounter_from(segments, patient_reference, zone):
    code, display = CLASSES.get(field(segments, "PV1", 2), ("IMP", "inpatient encounter"))
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": ACT_CODE, "code": code, "display": display},
        "subject": {"reference": patient_reference},
    }
    visit = field(segments, "PV1", 19)
    if visit:
        encounter["identifier"] = [{"system": "urn:hl7v2:visit", "value": visit}]
    admitted = field(segments, "PV1", 44) or field(segments, "EVN", 2)
    start = hl7_datetime(admitted, zone) if admitted else None
    if start:
        encounter["period"] = {"start": start}
    ward = field(segments, "PV1", 3, 1)
    if ward:
        room = field(segments, "PV1", 3, 2)
        bed = field(segments, "PV1", 3, 3)
        name = " ".join(p for p in (ward, room, bed) if p)
        encounter["location"] = [{"location": {"display": name}, "status": "active"}]
    doctor = field(segments, "PV1", 7, 2)
    if doctor:
        encounter["participant"] = [
            {
                "type": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "ATND",
                            }
                        ]
                    }
                ],
                "individual": {
                    "display": " ".join(p for p in (field(segments, "PV1", 7, 3), doctor) if p)
                },
            }
        ]
    return encounter, visit


def upsert_entry(fhir, resource, search_type, identifier, full_url):
    """A transaction entry updating the match of `identifier`, or creating the resource."""
    found = fhir.search_one(search_type, {"identifier": identifier}) if identifier else None
    if found is not None:
        resource["id"] = found["id"]
        return {
            "fullUrl": full_url,
            "resource": resource,
            "request": {"method": "PUT", "url": f"{search_type}/{found['id']}"},
        }, f"{search_type}/{found['id']}"
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": search_type},
    }, full_url


def handler(fhir, event):
    segments = parse(event.input)
    message_type = field(segments, "MSH", 9, 1) + "^" + field(segments, "MSH", 9, 2)
    if message_type != "ADT^A01":
        raise ValueError("expected ADT^A01, got " + message_type)
    control_id = field(segments, "MSH", 10)

    patient, system, mrn = patient_from(segments)
    patient_entry, patient_reference = upsert_entry(
        fhir, patient, "Patient", f"{system}|{mrn}", "urn:uuid:patient"
    )
    zone = event.secrets.get("HL7_SENDER_TIMEZONE") or "UTC"
    encounter, visit = encounter_from(segments, patient_reference, zone)
    encounter_entry, _ = upsert_entry(
        fhir,
        encounter,
        "Encounter",
        f"urn:hl7v2:visit|{visit}" if visit else None,
        "urn:uuid:encounter",
    )
    response = fhir.transaction(
        {"resourceType": "Bundle", "type": "transaction", "entry": [patient_entry, encounter_entry]}
    )
    stored = [entry["resource"] for entry in response["entry"]]
    logger.info("ADT^A01 %s -> Patient/%s", control_id, stored[0]["id"])
    return {
        "patient": "Patient/" + stored[0]["id"],
        "encounter": "Encounter/" + stored[1]["id"],
        "ack": f"MSH|^~\\&|FHIRBOTS||||||ACK^A01|ACK{control_id}|P|2.5\rMSA|AA|{control_id}",
    }
