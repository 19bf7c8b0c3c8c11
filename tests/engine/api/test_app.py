"""Tests of the application's middlewares: which requests are served without a key."""

from __future__ import annotations

import pytest

from fhirbots.engine.api.app import OPEN_PATHS
from tests.engine.conftest import Api


@pytest.mark.integration
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_an_open_path_is_open_to_reads_only(api: Api, method: str) -> None:
    """``PUT Subscription/$websocket`` is an update of a Subscription with id ``$websocket``:
    it needs a key like any other write (it was served unauthenticated and failed with 500)."""
    for path in sorted(OPEN_PATHS):
        response = await api.client.request(
            method,
            path,
            data=b'{"resourceType":"Subscription"}',
            headers={"Content-Type": "application/fhir+json"},
        )
        assert response.status in (401, 404, 405), (method, path, response.status)
        body = await response.json()
        assert body["resourceType"] == "OperationOutcome"
