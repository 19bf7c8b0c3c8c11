"""Tests of the OpenAPI description, and the API fuzzer run against a real server with it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.api.openapi import OPENAPI_PATH, openapi_document
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import API_PATH, Settings
from tests.engine.scenarios.process import serve_process

FUZZ_EXAMPLES = int(os.environ.get("FHIRBOTS_FUZZ_EXAMPLES", "20"))
"""Examples per operation the fuzzer sends (bounded so CI stays short)."""

FUZZ_SEED = os.environ.get("FHIRBOTS_FUZZ_SEED", "20261206")
"""A fixed seed makes a failure reproducible; set another to explore further."""


async def test_every_api_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    engine = Engine(Settings(data_dir=tmp_path))
    await engine.open()
    try:
        await engine.start_dispatcher(run=False)
        app = engine.app()
        document = openapi_document(app, "http://example.org/fhir/R4")
    finally:
        await engine.close()
    served = {
        (route.method.lower(), route.resource.canonical.removeprefix(API_PATH) or "/")
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(API_PATH)
        and route.method != "HEAD"
    }
    described = {
        (method, path) for path, operations in document["paths"].items() for method in operations
    }
    assert {(m, "/" if p == "/" else p) for m, p in served} == described
    assert ("post", "/{type}") in described
    assert ("get", "/Subscription/{id}/$status") in described
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert document["paths"]["/metadata"]["get"]["security"] == []
    type_param = document["paths"]["/{type}/{id}"]["get"]["parameters"][0]
    assert "Patient" in type_param["schema"]["enum"] and "Bot" in type_param["schema"]["enum"]


def _fetch_json(url: str) -> Any:
    with urllib.request.urlopen(url) as answer:
        return json.load(answer)


@pytest.mark.integration
@pytest.mark.timeout(600)
async def test_the_fuzzer_finds_no_server_error_and_no_hang(tmp_path: Path) -> None:
    """schemathesis sends generated requests to every operation: any 5xx or a request that
    takes longer than its timeout fails the run."""
    async with serve_process(tmp_path / "data", FHIRBOTS_ACCESS_LOG="false") as served:
        document = await asyncio.to_thread(_fetch_json, f"{served.base}/openapi.json")
        assert document["openapi"].startswith("3.")
        fuzzer = Path(sys.executable).parent / "schemathesis"
        proc = await asyncio.create_subprocess_exec(
            str(fuzzer),
            "run",
            served.base.removesuffix(API_PATH) + OPENAPI_PATH,
            "--header",
            f"Authorization: Bearer {served.token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(FUZZ_EXAMPLES),
            "--request-timeout",
            "30",
            "--seed",
            FUZZ_SEED,
            "--report-dir",
            str(tmp_path / "report"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
            cwd=tmp_path,  # it keeps a replay cache in the working directory
        )
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "Server error" not in text
