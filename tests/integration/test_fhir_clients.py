"""Two real Python FHIR clients against the served engine, on both storage engines: fhirpy
(asynchronous) and SMART's fhirclient (synchronous, run on a thread).

What each client does is what its users write: CRUD, search with paging through ``next``
links, ``count()``, ``get_or_create()``, ``patch()``, conditional update and delete,
``is_valid()`` and ``Patient/$everything``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fhirclient.models.fhirsearch import FHIRSearch
from fhirclient.models.observation import Observation as SmartObservation
from fhirclient.models.patient import Patient as SmartPatient
from fhirclient.server import FHIRNotFoundException, FHIRServer
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from tests.conftest import POSTGRES
from tests.engine.scenarios.dashboard import Served, served_engine

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", POSTGRES])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Served]:
    """The engine served over HTTP on a free loopback port."""
    async with served_engine(request.param, tmp_path) as running:
        yield running


def base_of(served: Served) -> str:
    return str(served.server.make_url("/fhir/R4"))


@pytest.fixture
def fhirpy(served: Served) -> AsyncFHIRClient:
    """fhirpy's asynchronous client with the admin key of project ``p1``."""
    return AsyncFHIRClient(base_of(served), authorization=f"Bearer {served.key}")


def mrn(value: str) -> list[dict[str, str]]:
    return [{"system": "urn:mrn", "value": value}]


# -- fhirpy ------------------------------------------------------------------------------------


async def test_fhirpy_crud_and_patch(fhirpy: AsyncFHIRClient) -> None:
    patient = fhirpy.resource("Patient", name=[{"family": "Chalmers"}], identifier=mrn("1"))
    await patient.save()
    assert patient.id and patient["meta"]["versionId"] == "1"

    read = await fhirpy.reference("Patient", patient.id).to_resource()
    assert read["name"][0]["family"] == "Chalmers"

    read["gender"] = "female"
    await read.save()
    assert read["meta"]["versionId"] == "2"

    # fhirpy sends a merge patch as application/json.
    await read.patch(birthDate="1974-12-25", active=True)
    again = await fhirpy.reference("Patient", patient.id).to_resource()
    assert (again["birthDate"], again["active"], again["gender"]) == ("1974-12-25", True, "female")
    assert again["meta"]["versionId"] == "3"

    await fhirpy.delete(again)
    with pytest.raises(ResourceNotFound):
        await fhirpy.reference("Patient", patient.id).to_resource()


async def test_fhirpy_search_pages_and_counts(fhirpy: AsyncFHIRClient) -> None:
    for i in range(7):
        await fhirpy.resource("Patient", name=[{"family": "Paging", "given": [str(i)]}]).save()
    await fhirpy.resource("Patient", name=[{"family": "Other"}]).save()
    search = fhirpy.resources("Patient").search(family="Paging")

    # Iteration follows the Bundles' next links, three a page.
    given = [p["name"][0]["given"][0] async for p in search.limit(3)]
    assert sorted(given) == [str(i) for i in range(7)]
    assert len(await search.fetch_all()) == 7
    assert await search.count() == 7
    assert await fhirpy.resources("Patient").count() == 8


async def test_fhirpy_get_or_create_twice_makes_one(fhirpy: AsyncFHIRClient) -> None:
    search = fhirpy.resources("Patient").search(identifier="urn:mrn|2")
    wanted = fhirpy.resource("Patient", name=[{"family": "Once"}], identifier=mrn("2"))
    first, created = await search.get_or_create(wanted)
    again = fhirpy.resource("Patient", name=[{"family": "Once"}], identifier=mrn("2"))
    second, created_again = await search.get_or_create(again)
    assert (created, created_again) == (True, False)
    assert first.id == second.id
    assert await search.count() == 1


async def test_fhirpy_conditional_update_and_delete(fhirpy: AsyncFHIRClient) -> None:
    search = fhirpy.resources("Patient").search(identifier="urn:mrn|3")
    made, created = await search.update(
        fhirpy.resource("Patient", name=[{"family": "First"}], identifier=mrn("3"))
    )
    assert created
    changed, created_again = await search.update(
        fhirpy.resource("Patient", name=[{"family": "Second"}], identifier=mrn("3"))
    )
    assert not created_again and changed.id == made.id
    assert (await search.get())["name"][0]["family"] == "Second"

    _, status = await search.delete()
    assert status == 204
    assert await search.count() == 0


async def test_fhirpy_is_valid(fhirpy: AsyncFHIRClient) -> None:
    good = fhirpy.resource("Patient", name=[{"family": "Valid"}], birthDate="1990-01-01")
    bad = fhirpy.resource("Patient", name=[{"family": "Invalid"}], birthDate="not-a-date")
    assert await good.is_valid() is True
    assert await bad.is_valid() is False
    assert await fhirpy.resources("Patient").count() == 0, "$validate writes nothing"


async def test_fhirpy_patient_everything(fhirpy: AsyncFHIRClient) -> None:
    patient = fhirpy.resource("Patient", name=[{"family": "Everything"}])
    await patient.save()
    other = fhirpy.resource("Patient", name=[{"family": "Elsewhere"}])
    await other.save()
    for owner, code in ((patient, "a"), (patient, "b"), (patient, "c"), (other, "d")):
        await fhirpy.resource(
            "Observation",
            status="final",
            code={"text": code},
            subject={"reference": f"Patient/{owner.id}"},
        ).save()

    page = await patient.execute("$everything", method="get", params={"_count": 2})
    assert page["type"] == "searchset" and page["total"] == 4
    seen = [e["resource"] for e in page["entry"]]
    assert seen[0]["resourceType"] == "Patient" and seen[0]["id"] == patient.id
    while (link := next((x for x in page["link"] if x["relation"] == "next"), None)) is not None:
        page = await fhirpy.execute(link["url"], method="get")
        seen += [e["resource"] for e in page["entry"]]
    assert sorted(r["code"]["text"] for r in seen[1:]) == ["a", "b", "c"]
    only = await patient.execute("$everything", method="get", params={"_type": "Observation"})
    assert only["total"] == 3


# -- fhirclient (synchronous: each test runs on a thread) ---------------------------------------


def smart_server(served: Served) -> FHIRServer:
    """fhirclient's server object, signing every request with the admin key of ``p1``."""
    server = FHIRServer(None, base_uri=base_of(served))
    server.session.headers["Authorization"] = f"Bearer {served.key}"
    return server


def smart_journey(server: FHIRServer) -> dict[str, Any]:
    """CRUD and a paged search with fhirclient; returns what the assertions need."""
    created = SmartPatient({"name": [{"family": "Smart"}], "gender": "male"}).create(server)
    patient = SmartPatient.read(created["id"], server)
    patient.birthDate = None
    patient.active = True
    updated = patient.update(server)
    for i in range(5):
        SmartObservation(
            {
                "status": "final",
                "code": {"text": f"o{i}"},
                "subject": {"reference": f"Patient/{patient.id}"},
            }
        ).create(server)
    search = FHIRSearch(SmartObservation, {"subject": f"Patient/{patient.id}", "_count": "2"})
    pages = list(search.perform_iter(server))
    codes = sorted(o.code.text for page in pages for o in (e.resource for e in page.entry or []))
    everything = server.request_json(f"Patient/{patient.id}/$everything")
    # A patient others reference may not be deleted (referential integrity): delete another.
    temporary = SmartPatient.read(
        SmartPatient({"name": [{"family": "T"}]}).create(server)["id"], server
    )
    temporary.delete(server)
    try:
        SmartPatient.read(temporary.id, server)
        gone = False
    except FHIRNotFoundException:
        gone = True
    except Exception as exc:  # requests' HTTPError for the 410
        gone = getattr(getattr(exc, "response", None), "status_code", None) == 410
    return {
        "version": updated["meta"]["versionId"],
        "active": updated["active"],
        "pages": len(pages),
        "codes": codes,
        "everything": everything["total"],
        "gone": gone,
    }


async def test_fhirclient_crud_search_paging_and_everything(served: Served) -> None:
    seen = await asyncio.to_thread(smart_journey, smart_server(served))
    assert seen == {
        "version": "2",
        "active": True,
        "pages": 3,
        "codes": [f"o{i}" for i in range(5)],
        "everything": 6,
        "gone": True,
    }
