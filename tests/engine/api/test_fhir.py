"""The FHIR REST API end to end over HTTP, on both storage adapters."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from fhirbots.engine.fhir.validator_pool import POOL_THRESHOLD
from tests.engine.conftest import Api

BASE = "/fhir/R4"


def patient(family: str = "Chalmers", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}], **extra}


async def post(api: Api, path: str, body: Any, **headers: str) -> Any:
    return await api.client.post(
        f"{BASE}/{path}", data=orjson.dumps(body), headers=api.headers(**headers)
    )


async def test_metadata_is_open_and_truthful(api: Api) -> None:
    resp = await api.client.get(f"{BASE}/metadata")
    assert resp.status == 200
    assert resp.content_type == "application/fhir+json"
    body = await resp.json()
    assert body["resourceType"] == "CapabilityStatement" and body["fhirVersion"] == "4.0.1"
    types = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert "Patient" in types and "Observation" in types
    assert {i["code"] for i in types["Patient"]["interaction"]} >= {"read", "vread", "create"}


async def test_health_is_open_everything_else_needs_a_key(api: Api) -> None:
    assert (await api.client.get("/healthz")).status == 200
    resp = await api.client.get(f"{BASE}/Patient/x")
    assert resp.status == 401
    body = await resp.json()
    assert body["resourceType"] == "OperationOutcome"
    bad = await api.client.get(f"{BASE}/Patient/x", headers={"Authorization": "Bearer nope"})
    assert bad.status == 401
    assert (await api.client.get("/metrics")).status == 401


async def test_create_read_update_history(api: Api) -> None:
    resp = await post(api, "Patient", patient())
    assert resp.status == 201
    created = await resp.json()
    pid = created["id"]
    assert resp.headers["ETag"] == 'W/"1"'
    assert resp.headers["Location"].endswith(f"/fhir/R4/Patient/{pid}/_history/1")
    assert "Last-Modified" in resp.headers and "traceparent" in resp.headers

    read = await api.client.get(f"{BASE}/Patient/{pid}", headers=api.headers())
    assert read.status == 200 and (await read.json())["name"][0]["family"] == "Chalmers"

    update = await api.client.put(
        f"{BASE}/Patient/{pid}",
        data=orjson.dumps(patient("Windsor", id=pid)),
        headers=api.headers(**{"If-Match": 'W/"1"'}),
    )
    assert update.status == 200 and update.headers["ETag"] == 'W/"2"'

    stale = await api.client.put(
        f"{BASE}/Patient/{pid}",
        data=orjson.dumps(patient("Stale", id=pid)),
        headers=api.headers(**{"If-Match": 'W/"1"'}),
    )
    assert stale.status == 412
    assert (await stale.json())["resourceType"] == "OperationOutcome"

    v1 = await api.client.get(f"{BASE}/Patient/{pid}/_history/1", headers=api.headers())
    assert (await v1.json())["name"][0]["family"] == "Chalmers"
    history = await (
        await api.client.get(f"{BASE}/Patient/{pid}/_history", headers=api.headers())
    ).json()
    assert history["type"] == "history" and history["total"] == 2
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "POST"]


async def test_update_as_create_and_id_mismatch(api: Api) -> None:
    resp = await api.client.put(
        f"{BASE}/Patient/my-id", data=orjson.dumps(patient(id="my-id")), headers=api.headers()
    )
    assert resp.status == 201
    mismatch = await api.client.put(
        f"{BASE}/Patient/my-id", data=orjson.dumps(patient(id="other")), headers=api.headers()
    )
    assert mismatch.status == 400


async def test_delete_then_read_is_gone_and_history_keeps_tombstone(api: Api) -> None:
    pid = (await (await post(api, "Patient", patient())).json())["id"]
    resp = await api.client.delete(f"{BASE}/Patient/{pid}", headers=api.headers())
    assert resp.status == 204
    assert (await api.client.get(f"{BASE}/Patient/{pid}", headers=api.headers())).status == 410
    history = await (
        await api.client.get(f"{BASE}/Patient/{pid}/_history", headers=api.headers())
    ).json()
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in history["entry"][0]
    assert (
        await api.client.get(f"{BASE}/Patient/{pid}/_history/2", headers=api.headers())
    ).status == 410


async def test_errors_are_operation_outcomes_with_the_right_status(api: Api) -> None:
    malformed = await api.client.post(f"{BASE}/Patient", data=b"{not json", headers=api.headers())
    assert malformed.status == 400
    assert (await malformed.json())["resourceType"] == "OperationOutcome"
    wrong_type = await api.client.post(
        f"{BASE}/Patient",
        data=orjson.dumps(patient()),
        headers={**api.headers(), "Content-Type": "text/plain"},
    )
    assert wrong_type.status == 415
    assert (await api.client.get(f"{BASE}/Patient/nope", headers=api.headers())).status == 404
    assert (await api.client.get(f"{BASE}/NotAType/1", headers=api.headers())).status == 404
    invalid = await post(
        api, "Patient", {"resourceType": "Patient", "birthDate": "2020-13-45", "gender": 3}
    )
    assert invalid.status == 422
    outcome = await invalid.json()
    paths = {e for issue in outcome["issue"] for e in issue.get("expression", [])}
    assert "Patient.birthDate" in paths
    method = await api.client.request("TRACE", f"{BASE}/Patient/x", headers=api.headers())
    assert method.status == 405
    assert (await method.json())["resourceType"] == "OperationOutcome"
    history = await (await api.client.get(f"{BASE}/_history", headers=api.headers())).json()
    assert history["total"] == 0, "failed requests must change nothing"


async def test_json_patch(api: Api) -> None:
    pid = (await (await post(api, "Patient", patient())).json())["id"]
    ops = [{"op": "replace", "path": "/name/0/family", "value": "Patched"}]
    resp = await api.client.patch(
        f"{BASE}/Patient/{pid}",
        data=orjson.dumps(ops),
        headers={**api.headers(), "Content-Type": "application/json-patch+json"},
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["name"][0]["family"] == "Patched" and body["meta"]["versionId"] == "2"
    bad = await api.client.patch(
        f"{BASE}/Patient/{pid}",
        data=orjson.dumps([{"op": "replace", "path": "/gender", "value": "x"}]),
        headers={**api.headers(), "Content-Type": "application/json-patch+json"},
    )
    assert bad.status == 422


async def test_transaction_rewrites_urn_references_and_is_atomic(api: Api) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:p1",
                "resource": patient(),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:o1",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "urn:uuid:p1"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    resp = await post(api, "", bundle)
    assert resp.status == 200
    body = await resp.json()
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "201 Created"]
    patient_loc = body["entry"][0]["response"]["location"]
    obs_loc = body["entry"][1]["response"]["location"]
    obs = await (
        await api.client.get(f"{BASE}/{obs_loc.rsplit('/_history', 1)[0]}", headers=api.headers())
    ).json()
    assert obs["subject"]["reference"] == patient_loc.rsplit("/_history", 1)[0]

    bad = {
        **bundle,
        "entry": [
            *bundle["entry"],
            {
                "resource": {"resourceType": "Patient", "birthDate": "not-a-date"},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    before = (await (await api.client.get(f"{BASE}/_history", headers=api.headers())).json())[
        "total"
    ]
    failed = await post(api, "", bad)
    assert failed.status == 422
    after = (await (await api.client.get(f"{BASE}/_history", headers=api.headers())).json())[
        "total"
    ]
    assert after == before


async def test_large_transaction_is_validated_in_the_pool_and_names_the_bad_entry(
    api: Api,
) -> None:
    entries = [
        {
            "fullUrl": f"urn:uuid:big-{i}",
            "resource": patient(),
            "request": {"method": "POST", "url": "Patient"},
        }
        for i in range(POOL_THRESHOLD + 10)
    ]
    entries[70]["resource"] = {"resourceType": "Patient", "gender": 42}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    failed = await post(api, "", bundle)
    assert failed.status == 422
    outcome = await failed.json()
    [issue] = outcome["issue"]
    assert issue["diagnostics"].startswith("Bundle.entry[70]: Patient.gender")
    assert issue["expression"] == ["Patient.gender"]

    entries[70]["resource"] = patient()
    done = await post(api, "", bundle)
    assert done.status == 200
    body = await done.json()
    assert {e["response"]["status"] for e in body["entry"]} == {"201 Created"}


async def test_batch_reports_each_entry(api: Api) -> None:
    patch = base64.b64encode(
        orjson.dumps([{"op": "add", "path": "/active", "value": True}])
    ).decode()
    await api.client.put(
        f"{BASE}/Patient/b1", data=orjson.dumps(patient(id="b1")), headers=api.headers()
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/missing"}},
            {"request": {"method": "GET", "url": "Patient/b1"}},
            {
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": patch,
                },
                "request": {"method": "PATCH", "url": "Patient/b1"},
            },
            {"request": {"method": "DELETE", "url": "Patient/b1"}},
        ],
    }
    body = await (await post(api, "", bundle)).json()
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created", "404", "200 OK", "200 OK", "204 No Content"]
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert body["entry"][2]["resource"]["id"] == "b1"


async def test_one_project_cannot_touch_another(api: Api) -> None:
    other = await api.engine.create_project("p2", "Project two")
    pid = (await (await post(api, "Patient", patient())).json())["id"]
    foreign = api.headers(other)
    assert (await api.client.get(f"{BASE}/Patient/{pid}", headers=foreign)).status == 404
    assert (await api.client.get(f"{BASE}/Patient/{pid}/_history", headers=foreign)).status == 404
    history = await (await api.client.get(f"{BASE}/_history", headers=foreign)).json()
    assert history["total"] == 0
    type_history = await (await api.client.get(f"{BASE}/Patient/_history", headers=foreign)).json()
    assert type_history["total"] == 0
    update = await api.client.put(
        f"{BASE}/Patient/{pid}", data=orjson.dumps(patient("Hijack", id=pid)), headers=foreign
    )
    assert update.status == 201, "the same id in another project is another resource"
    mine = await (await api.client.get(f"{BASE}/Patient/{pid}", headers=api.headers())).json()
    assert mine["name"][0]["family"] == "Chalmers"
    assert (await api.client.delete(f"{BASE}/Patient/{pid}", headers=foreign)).status == 204
    assert (await api.client.get(f"{BASE}/Patient/{pid}", headers=api.headers())).status == 200


async def test_history_paging_links(api: Api) -> None:
    for i in range(5):
        await post(api, "Patient", patient(str(i)))
    first = await (
        await api.client.get(f"{BASE}/Patient/_history?_count=2", headers=api.headers())
    ).json()
    assert first["total"] == 5 and len(first["entry"]) == 2
    links = {link["relation"]: link["url"] for link in first["link"]}
    nxt = links["next"].split("/fhir/R4", 1)[1]
    second = await (await api.client.get(f"{BASE}{nxt}", headers=api.headers())).json()
    assert len(second["entry"]) == 2
    seen = {e["resource"]["id"] for e in first["entry"]} | {
        e["resource"]["id"] for e in second["entry"]
    }
    assert len(seen) == 4
    bad = await api.client.get(f"{BASE}/_history?_since=yesterday", headers=api.headers())
    assert bad.status == 400


async def test_patch_formats_validate_and_honour_if_match(api: Api) -> None:
    pid = (await (await post(api, "Patient", patient())).json())["id"]
    url = f"{BASE}/Patient/{pid}"

    async def patch(body: Any, media: str, **extra: str) -> Any:
        headers = {**api.headers(**extra), "Content-Type": media}
        return await api.client.patch(url, data=orjson.dumps(body), headers=headers)

    merged = await patch({"active": True, "name": None}, "application/json")
    assert merged.status == 200
    body = await merged.json()
    assert body["active"] is True and "name" not in body and body["meta"]["versionId"] == "2"

    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "add"},
                    {"name": "path", "valueString": "Patient"},
                    {"name": "name", "valueString": "birthDate"},
                    {"name": "value", "valueDate": "1974-12-25"},
                ],
            }
        ],
    }
    stale = await patch(parameters, "application/fhir+json", **{"If-Match": 'W/"1"'})
    assert stale.status == 412
    done = await patch(parameters, "application/fhir+json", **{"If-Match": 'W/"2"'})
    assert done.status == 200 and (await done.json())["birthDate"] == "1974-12-25"

    invalid = await patch({"birthDate": "not-a-date"}, "application/merge-patch+json")
    assert invalid.status == 422
    malformed = await patch([{"op": "nonsense"}], "application/json-patch+json")
    assert malformed.status == 400
    assert (await malformed.json())["resourceType"] == "OperationOutcome"
    unknown = await patch({}, "text/plain")
    assert unknown.status == 415
    read = await api.client.get(url, headers=api.headers())
    assert (await read.json())["meta"]["versionId"] == "3", "refused patches change nothing"


async def test_conditional_reads_answer_304(api: Api) -> None:
    created = await post(api, "Patient", patient())
    pid = (await created.json())["id"]
    url = f"{BASE}/Patient/{pid}"
    for path in (url, f"{url}/_history/1"):
        same = await api.client.get(path, headers=api.headers(**{"If-None-Match": 'W/"1"'}))
        assert same.status == 304 and same.headers["ETag"] == 'W/"1"'
        assert await same.read() == b""
        other = await api.client.get(path, headers=api.headers(**{"If-None-Match": 'W/"9"'}))
        assert other.status == 200
    modified = created.headers["Last-Modified"]
    unchanged = await api.client.get(url, headers=api.headers(**{"If-Modified-Since": modified}))
    assert unchanged.status == 304
    long_ago = "Mon, 01 Jan 2001 00:00:00 GMT"
    newer = await api.client.get(url, headers=api.headers(**{"If-Modified-Since": long_ago}))
    assert newer.status == 200
    wins = await api.client.get(
        url, headers=api.headers(**{"If-None-Match": 'W/"9"', "If-Modified-Since": modified})
    )
    assert wins.status == 200, "If-None-Match decides when both are sent"


async def test_validation_on_write_bindings_references_and_cascade(api: Api) -> None:
    robot = await post(api, "Patient", patient(gender="robot"))
    assert robot.status == 422
    [issue] = (await robot.json())["issue"]
    assert issue["code"] == "code-invalid" and issue["expression"] == ["Patient.gender"]
    assert "female, male, other, unknown" in issue["diagnostics"]
    created = await (await post(api, "Patient", patient(gender="female"))).json()
    pid = created["id"]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/nobody"},
    }
    dangling = await post(api, "Observation", observation)
    assert dangling.status == 422
    assert "'Patient/nobody'" in (await dangling.json())["issue"][0]["diagnostics"]
    observation["subject"] = {"reference": f"Patient/{pid}"}
    obs = await (await post(api, "Observation", observation)).json()

    blocked = await api.client.delete(f"{BASE}/Patient/{pid}", headers=api.headers())
    assert blocked.status == 409
    assert f"Observation/{obs['id']}" in (await blocked.json())["issue"][0]["diagnostics"]
    wrong = await api.client.delete(f"{BASE}/Patient/{pid}?_cascade=yes", headers=api.headers())
    assert wrong.status == 400
    cascade = await api.client.delete(
        f"{BASE}/Patient/{pid}?_cascade=delete", headers=api.headers()
    )
    assert cascade.status == 204
    gone = await api.client.get(f"{BASE}/Observation/{obs['id']}", headers=api.headers())
    assert gone.status == 410
