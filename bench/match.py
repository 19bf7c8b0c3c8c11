"""Throughput of the matcher stage alone: change events per second on one core.

Builds 1, 100, 1,000 and 10,000 active subscriptions from Synthea resources (a mix of types
and criteria forms: codes, patients, ids, status, FHIRPath with %previous/%current, topic
subscriptions with filters, and a small share of criteria the index cannot key), then pushes
change events made from Synthea resources (creates, updates, deletes) through
``MatcherStage.handle`` in batches, as the consumer would: decode, match, encode and publish
notifications (to an in-memory publisher; the datastore is read once, when the configuration
is loaded). Most subscriptions do not match a given event.

    python bench/match.py [--bundles 8] [--events 6000] [--sizes 1,100,1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fhirbots.engine.eventlog.port import OutgoingMessage, Record
from fhirbots.engine.stages.matcher import MatcherStage
from fhirbots.schemas.events import ChangeEvent
from fhirbots.subscriptions.search import default_registry

SHARED = Path(os.environ.get("FHIRBOTS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BATCH = 500
"""Records per handler call (the event log's default batch)."""
FHIRPATH_URL = "https://medplum.com/fhir/StructureDefinition/fhir-path-criteria-expression"
INTERACTION_URL = "https://medplum.com/fhir/StructureDefinition/subscription-supported-interaction"
FILTER_URL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria"
)
TOPIC_URL = "http://example.org/topics/encounter-finished"

REGISTRY = default_registry()


def load(bundles: int) -> list[dict[str, Any]]:
    files = sorted((SHARED / "fhir-samples" / "synthea-r4").glob("*.json"))[:bundles]
    out: list[dict[str, Any]] = []
    for file in files:
        bundle = json.loads(file.read_text())
        ids = {
            e["fullUrl"]: f"{e['resource']['resourceType']}/{e['fullUrl'].rsplit(':', 1)[-1]}"
            for e in bundle["entry"]
        }
        text = json.dumps([e["resource"] for e in bundle["entry"]])
        for urn, ref in ids.items():
            text = text.replace(f'"{urn}"', f'"{ref}"')
        resources = json.loads(text)
        for entry, resource in zip(bundle["entry"], resources, strict=True):
            resource["id"] = entry["fullUrl"].rsplit(":", 1)[-1]
            resource["meta"] = {"versionId": "1"}
        out.extend(resources)
    return out


def has(rtype: str, code: str) -> bool:
    return REGISTRY.get(rtype, code) is not None


BROAD_RULES = 20
"""Population-wide rules (``Observation?code=X``), some with FHIRPath: a fixed handful, as
written by administrators; they do not multiply with users."""
UNKEYED_RULES = 10
"""Rules the index cannot key (dates, quantities, strings): also a fixed handful."""
SUBSCRIPTIONS_PER_PATIENT = 5
"""Patient-specific subscriptions per patient: the population grows with the count, so an
event concerns about this many of them whatever the total (most do not match)."""

TYPES_WITH_PATIENT = ("Observation", "Condition", "Encounter", "Procedure", "Immunization")


def broad_rule(resource: dict[str, Any], i: int) -> dict[str, Any]:
    rtype = resource["resourceType"]
    coding = ((resource.get("code") or {}).get("coding") or [{}])[0]
    sub: dict[str, Any] = {"criteria": f"{rtype}?code={coding.get('system', '')}|{coding['code']}"}
    if i % 2:
        sub["extension"] = [
            {"url": FHIRPATH_URL, "valueString": "%previous.status != %current.status"},
            {"url": INTERACTION_URL, "valueCode": "update"},
        ]
    return sub


UNKEYED = (
    "Observation?value-quantity=gt180",
    "Observation?date=lt2000-01-01",
    "Patient?family=smi",
    "Encounter?date=gt2100-01-01",
    "Condition?onset-date=lt1950",
)


def specific_rule(patient: str, resource: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    rtype = rng.choice(TYPES_WITH_PATIENT)
    if roll < 0.1:
        return {
            "criteria": TOPIC_URL,
            "_criteria": {
                "extension": [{"url": FILTER_URL, "valueString": f"Encounter?patient={patient}"}]
            },
        }
    if roll < 0.25:
        return {
            "criteria": f"{rtype}?patient={patient}",
            "extension": [
                {"url": FHIRPATH_URL, "valueString": "%previous.status != %current.status"}
            ],
        }
    if roll < 0.3:
        return {
            "criteria": f"{rtype}?patient={patient}",
            "extension": [{"url": INTERACTION_URL, "valueCode": "delete"}],
        }
    if roll < 0.4:
        # A resource of this patient: a real one for the real patients, else one of the
        # synthetic patient's (never in the event stream).
        rid = resource["id"] if "synthetic" not in patient else f"{patient[8:]}-{roll}"
        return {"criteria": f"{resource['resourceType']}?_id={rid}"}
    coding = ((resource.get("code") or {}).get("coding") or [{}])[0]
    if roll < 0.7 and coding.get("code") and resource["resourceType"] in TYPES_WITH_PATIENT:
        return {"criteria": f"{resource['resourceType']}?patient={patient}&code={coding['code']}"}
    return {"criteria": f"{rtype}?patient={patient}"}


def subscriptions(
    count: int, resources: list[dict[str, Any]], seed: int = 1
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    coded = [r for r in resources if r["resourceType"] == "Observation" and r.get("code")]
    pool = [r for r in resources if r["resourceType"] != "Claim"]
    real_patients = sorted(
        {f"Patient/{r['id']}" for r in resources if r["resourceType"] == "Patient"}
    )
    population = max(len(real_patients), count // SUBSCRIPTIONS_PER_PATIENT)
    patients = real_patients + [
        f"Patient/synthetic-{i}" for i in range(population - len(real_patients))
    ]
    out: list[dict[str, Any]] = [
        {
            "resourceType": "SubscriptionTopic",
            "id": "topic",
            "url": TOPIC_URL,
            "status": "active",
            "resourceTrigger": [
                {
                    "resource": "Encounter",
                    "supportedInteraction": ["create", "update"],
                    "queryCriteria": {
                        "previous": "Encounter?status:not=finished",
                        "resultForCreate": "test-passes",
                        "current": "Encounter?status=finished",
                        "requireBoth": True,
                    },
                }
            ],
            "canFilterBy": [{"resource": "Encounter", "filterParameter": "patient"}],
        }
    ]
    for i in range(count):
        if i < BROAD_RULES:
            fields = broad_rule(rng.choice(coded), i)
        elif i < BROAD_RULES + UNKEYED_RULES:
            fields = {"criteria": UNKEYED[i % len(UNKEYED)]}
        else:
            fields = specific_rule(rng.choice(patients), rng.choice(pool), rng)
        out.append(
            {
                "resourceType": "Subscription",
                "id": f"s{i}",
                "meta": {"versionId": "1"},
                "status": "active",
                "reason": "bench",
                "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
                **fields,
            }
        )
    return out


def events(resources: list[dict[str, Any]], count: int, seed: int = 2) -> list[Record]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    records: list[Record] = []
    for i in range(count):
        resource = resources[i % len(resources)]
        roll = rng.random()
        previous: dict[str, Any] | None = None
        current: dict[str, Any] | None = resource
        interaction = "create"
        if roll < 0.4:
            interaction = "update"
            previous = {**resource, "status": "in-progress"}
        elif roll < 0.5:
            interaction, previous, current = "delete", resource, None
        event = ChangeEvent(
            event_id=str(uuid.uuid4()),
            project="bench",
            interaction=interaction,  # type: ignore[arg-type]
            resource_type=resource["resourceType"],
            resource_id=resource["id"],
            version_id="2",
            resource=current,
            previous=previous,
            time=now,
            config_generation=1,
        )
        records.append(
            Record("fhir.changes.v1", 0, i, event.key, event.model_dump_json().encode(), (), now)
        )
    return records


class Sink:
    """An in-memory publisher: counts what the stage publishes."""

    def __init__(self) -> None:
        self.published = 0

    async def publish_many(self, _topic: str, messages: Sequence[OutgoingMessage]) -> list[Any]:
        self.published += len(messages)
        return []


class Store:
    """Answers the stage's one configuration query."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.resources = resources

    async def current_resources(self, _project: str, *_resource_types: str) -> list[Any]:
        from fhirbots.engine.storage.model import StoredResource

        now = datetime.now(UTC)
        return [
            StoredResource(r["resourceType"], r["id"], 1, now, False, r) for r in self.resources
        ]


async def run(
    size: int, resources: list[dict[str, Any]], records: list[Record]
) -> dict[str, float]:
    sink = Sink()
    stage = MatcherStage(Store(subscriptions(size, resources)), sink)  # type: ignore[arg-type]
    config = await stage.config_for("bench", 1)
    assert not config.problems, config.problems[:3]
    await stage.handle(records[:BATCH])  # warm caches (compiled FHIRPath, extractors)
    sink.published = 0
    started = time.perf_counter()
    cpu = time.process_time()
    for i in range(0, len(records), BATCH):
        await stage.handle(records[i : i + BATCH])
    wall = time.perf_counter() - started
    cpu_used = time.process_time() - cpu
    return {
        "events_per_s": len(records) / wall,
        "events_per_cpu_s": len(records) / cpu_used,
        "notifications_per_event": sink.published / len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=8)
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--sizes", default="1,100,1000,10000")
    args = parser.parse_args()
    resources = load(args.bundles)
    records = events(resources, args.events)
    print(f"{len(resources)} Synthea resources, {len(records)} change events, batch {BATCH}")
    print(f"{'subscriptions':>13} {'events/s':>10} {'events/cpu-s':>13} {'notif/event':>12}")
    results = {}
    for size in (int(s) for s in args.sizes.split(",")):
        result = asyncio.run(run(size, resources, records))
        results[size] = result
        print(
            f"{size:>13} {result['events_per_s']:>10.0f} {result['events_per_cpu_s']:>13.0f}"
            f" {result['notifications_per_event']:>12.2f}"
        )
    if 100 in results and 10000 in results:
        slowdown = results[100]["events_per_s"] / results[10000]["events_per_s"]
        print(f"slowdown 100 -> 10,000 subscriptions: {slowdown:.2f}x")


if __name__ == "__main__":
    main()
