"""System search with ``_type`` and when a searchset carries ``total``, over HTTP on both
storage engines."""

from __future__ import annotations

from typing import Any

import orjson
from yarl import URL

from tests.engine.api.test_search import get
from tests.engine.conftest import Api

BASE = "/fhir/R4"


async def load(api: Api) -> None:
    for i in range(3):
        await api.client.post(
            f"{BASE}/Patient",
            data=orjson.dumps({"resourceType": "Patient", "name": [{"family": f"P{i}"}]}),
            headers=api.headers(),
        )
    for i in range(4):
        await api.client.post(
            f"{BASE}/Observation",
            data=orjson.dumps(
                {"resourceType": "Observation", "status": "final", "code": {"text": f"o{i}"}}
            ),
            headers=api.headers(),
        )
    await api.client.post(
        f"{BASE}/Organization",
        data=orjson.dumps({"resourceType": "Organization", "name": "Left out"}),
        headers=api.headers(),
    )


def types(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["resourceType"] for e in bundle.get("entry", [])]


async def test_system_search_with_type_pages_over_the_types(api: Api) -> None:
    await load(api)
    first = await get(api, "?_type=Patient,Observation&_count=2")
    assert first["total"] == 7
    seen = types(first)
    page = first
    while (link := next((x for x in page["link"] if x["relation"] == "next"), None)) is not None:
        resp = await api.client.get(URL(link["url"]).path_qs, headers=api.headers())
        page = await resp.json()
        assert page["total"] == 7
        seen += types(page)
    assert seen == ["Observation"] * 4 + ["Patient"] * 3, "ordered by type"
    form = await api.client.post(
        f"{BASE}/_search",
        data="_type=Patient&_count=10",
        headers={**api.headers(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert types(await form.json()) == ["Patient"] * 3
    counted = await get(api, "?_type=Patient,Observation&_summary=count")
    assert counted["total"] == 7 and not counted.get("entry")
    unknown = await api.client.get(f"{BASE}?_type=Nope", headers=api.headers())
    assert unknown.status == 404


async def test_total_is_present_when_asked_or_free(api: Api) -> None:
    await load(api)
    assert (await get(api, "Observation?_summary=count"))["total"] == 4
    zero = await get(api, "Observation?_count=0")
    assert zero["total"] == 4 and not zero.get("entry")
    assert (await get(api, "Observation?_count=2&_total=accurate"))["total"] == 4
    assert "total" not in await get(api, "Observation?_count=2&_total=estimate")
    assert "total" not in await get(api, "Observation?_count=2&_total=none")
    assert (await get(api, "Observation?_count=10"))["total"] == 4, "a last page tells it"
    # fhirpy's count() sends Aidbox's _totalMethod.
    assert (await get(api, "Observation?_count=0&_totalMethod=count"))["total"] == 4
    assert (await get(api, "Observation?_count=1&_totalMethod=count"))["total"] == 4
