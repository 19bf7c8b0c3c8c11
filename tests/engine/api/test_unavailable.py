"""A datastore that is down, seen over HTTP: a 503 OperationOutcome a client may retry, not a
500, and the API answering again once the database is back."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import POSTGRES, postgres_dsn
from tests.engine.conftest import Api
from tests.engine.scenarios.datastore import postgres_down

BASE = "/fhir/R4"


@pytest.mark.parametrize("api", [POSTGRES], indirect=True)
async def test_postgres_down_is_answered_503_until_it_is_back(api: Api) -> None:
    body = orjson.dumps({"resourceType": "Patient", "name": [{"family": "A"}]})
    # Also caches the key, so that the requests below get past authentication to the resources.
    created = await api.client.post(f"{BASE}/Patient", data=body, headers=api.headers())
    assert created.status == 201
    pid = (await created.json())["id"]
    async with postgres_down(postgres_dsn()):
        requests = {
            "read": ("GET", f"Patient/{pid}", api.headers()),
            "search": ("GET", "Patient?family=A", api.headers()),
            "history": ("GET", f"Patient/{pid}/_history", api.headers()),
            "create": ("POST", "Patient", api.headers()),
            "key lookup": ("GET", f"Patient/{pid}", api.headers("unknown-key")),
        }
        answers = {}
        for name, (method, path, headers) in requests.items():
            data = body if method == "POST" else None
            resp = await api.client.request(method, f"{BASE}/{path}", data=data, headers=headers)
            outcome = await resp.json()
            answers[name] = (resp.status, outcome["resourceType"], outcome["issue"][0]["code"])
        assert answers == {name: (503, "OperationOutcome", "transient") for name in requests}
    read = await api.client.get(f"{BASE}/Patient/{pid}", headers=api.headers())
    assert read.status == 200
