"""Transactions: what they refuse before writing, and references within them, on every
storage."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fhirbots.engine.errors import BadRequest, Conflict, FhirError, Unprocessable
from fhirbots.engine.fhir.bundles import process_bundle
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.storage.model import WriteContext
from fhirbots.engine.storage.port import Storage

CTX = WriteContext(author="ApiKey/k1")


async def no_get(_project: str, url: str) -> Any:
    raise AssertionError(f"no GET expected, got {url}")


def entry(method: str, url: str, resource: Any = None, full_url: str | None = None) -> Any:
    out: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        out["resource"] = resource
    if full_url is not None:
        out["fullUrl"] = full_url
    return out


def transaction(*entries: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": subject},
        **extra,
    }


@pytest.fixture
def fhir(storage: Storage) -> FhirService:
    return FhirService(storage)


async def run(fhir: FhirService, bundle: dict[str, Any]) -> dict[str, Any]:
    return await process_bundle(fhir, "p1", bundle, CTX, get=no_get)


async def refused(fhir: FhirService, bundle: dict[str, Any], error: type[FhirError]) -> str:
    """The message (entry label first) of the error the transaction is refused with."""
    with pytest.raises(error) as caught:
        await run(fhir, bundle)
    return caught.value.message


async def test_duplicate_full_urls_are_refused_naming_both_entries(fhir: FhirService) -> None:
    bundle = transaction(
        entry("POST", "Patient", {"resourceType": "Patient"}, "urn:uuid:a"),
        entry("POST", "Patient", {"resourceType": "Patient"}, "urn:uuid:b"),
        entry("POST", "Patient", {"resourceType": "Patient"}, "urn:uuid:a"),
    )
    assert re.search(
        r"Bundle.entry\[0\] and Bundle.entry\[2\].*urn:uuid:a",
        await refused(fhir, bundle, BadRequest),
    )
    assert await fhir.storage.count_by_type("p1") == {}


async def test_two_entries_on_one_resource_are_refused(fhir: FhirService) -> None:
    bundle = transaction(
        entry("PUT", "Patient/x", {"resourceType": "Patient", "id": "x"}),
        entry("DELETE", "Patient/x"),
    )
    assert re.search(
        r"Bundle.entry\[0\] and Bundle.entry\[1\].*Patient/x",
        await refused(fhir, bundle, BadRequest),
    )


async def test_an_unresolved_urn_reference_is_refused(fhir: FhirService) -> None:
    bundle = transaction(
        entry("POST", "Patient", {"resourceType": "Patient"}, "urn:uuid:a"),
        entry("POST", "Observation", observation("urn:uuid:elsewhere"), "urn:uuid:o"),
    )
    assert re.search(
        r"Bundle.entry\[1\]: 'urn:uuid:elsewhere'", await refused(fhir, bundle, BadRequest)
    )
    assert await fhir.storage.count_by_type("p1") == {}


async def test_references_to_entries_of_the_transaction_resolve(fhir: FhirService) -> None:
    bundle = transaction(
        entry("POST", "Observation", observation("urn:uuid:a"), "urn:uuid:o"),
        entry("POST", "Observation", observation("Patient/b"), "urn:uuid:o2"),
        entry("POST", "Patient", {"resourceType": "Patient"}, "urn:uuid:a"),
        entry("PUT", "Patient/b", {"resourceType": "Patient", "id": "b"}),
    )
    response = await run(fhir, bundle)
    assert [e["response"]["status"] for e in response["entry"]] == ["201 Created"] * 4
    assert (await fhir.storage.count_by_type("p1")) == {"Observation": 2, "Patient": 2}


async def test_entries_are_checked_against_the_store_and_each_other(fhir: FhirService) -> None:
    assert re.search(
        r"Bundle.entry\[0\]: Observation.subject.*Patient/z",
        await refused(
            fhir, transaction(entry("POST", "Observation", observation("Patient/z"))), Unprocessable
        ),
    )
    await fhir.update("p1", "Patient", "z", {"resourceType": "Patient", "id": "z"}, CTX)
    await run(
        fhir, transaction(entry("PUT", "Observation/o", {**observation("Patient/z"), "id": "o"}))
    )
    # Deleting a referenced resource with its referrer in one transaction is fine; alone it is not.
    message = await refused(fhir, transaction(entry("DELETE", "Patient/z")), Conflict)
    assert message.startswith("Bundle.entry[0]: Patient/z is referenced by Observation/o")
    await run(fhir, transaction(entry("DELETE", "Patient/z"), entry("DELETE", "Observation/o")))
    assert await fhir.storage.count_by_type("p1") == {}


async def test_a_bad_code_in_a_batch_fails_its_entry_only(fhir: FhirService) -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            entry("POST", "Patient", {"resourceType": "Patient", "gender": "robot"}),
            entry("POST", "Patient", {"resourceType": "Patient", "gender": "female"}),
        ],
    }
    response = await process_bundle(fhir, "p1", batch, CTX, get=no_get)
    first, second = (e["response"] for e in response["entry"])
    assert first["status"] == "422"
    assert first["outcome"]["issue"][0]["code"] == "code-invalid"
    assert first["outcome"]["issue"][0]["expression"] == ["Patient.gender"]
    assert second["status"] == "201 Created"
