"""The worst requests the default limits let through keep the API process under its documented
memory ceiling (docs/security.md, "Request limits").

The server runs as its own process with the default settings; after each request the test
reads the process's peak resident set (``VmHWM``) from /proc.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from fhirbots.engine.settings import Settings
from tests.engine.scenarios.process import ServedProcess, serve_process

pytestmark = pytest.mark.integration

CEILING_MB = 768
"""The documented ceiling of the API process's resident set under any single request."""

DEFAULTS = Settings()
MIB = 1024 * 1024


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def call(
    served: ServedProcess, method: str, path: str, body: bytes | None = None, **headers: str
) -> int:
    request = urllib.request.Request(
        served.base + path,
        data=body,
        method=method,
        headers={
            "Authorization": f"Bearer {served.token}",
            "Content-Type": "application/fhir+json",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        refused.read()
        return refused.code


def largest_patient() -> bytes:
    """A Patient of small elements just under the resource bound: the costliest to parse."""
    name = {"family": "x", "given": ["a", "b"]}
    one = len(json.dumps(name)) + 2
    count = (DEFAULTS.max_resource_bytes - 200) // one
    patient = {"resourceType": "Patient", "id": "big", "name": [name] * count}
    return json.dumps(patient).encode()


def largest_transaction() -> bytes:
    """A transaction as close to the body bound as it fits: 1,000 observations of the patient
    (a tenth of the entries allowed, each ten times larger: writing 10,000 takes minutes)."""
    entries = 1_000
    text = "y" * (DEFAULTS.max_request_bytes // entries - 300)
    entry = {
        "resource": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": text},
            "subject": {"reference": "Patient/big"},
        },
        "request": {"method": "POST", "url": "Observation"},
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry] * entries}
    body = json.dumps(bundle).encode()
    assert DEFAULTS.max_request_bytes * 0.95 < len(body) <= DEFAULTS.max_request_bytes
    return body


def reads(url: str) -> bytes:
    entry = {"request": {"method": "GET", "url": url}}
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry] * 10_000}
    return json.dumps(bundle).encode()


WORST: list[tuple[str, Callable[[ServedProcess], int], set[int]]] = [
    (
        "largest resource",
        lambda s: call(s, "PUT", "/Patient/big", largest_patient()),
        {201},
    ),
    (
        "largest transaction",
        lambda s: call(s, "POST", "", largest_transaction()),
        {200},
    ),
    (
        "largest search page",
        lambda s: call(s, "GET", "/Observation?_count=1000"),
        {200},
    ),
    (
        "10,000 reads of 1,000 each",
        lambda s: call(s, "POST", "", reads("Observation?_count=1000")),
        {400},
    ),
    (
        "the patient with its 1,000 observations",
        lambda s: call(s, "GET", "/Patient?_id=big&_revinclude=Observation:subject"),
        {200},
    ),
    (
        "gzip bomb",
        lambda s: call(
            s,
            "POST",
            "/Patient",
            gzip.compress(b" " * (4 * DEFAULTS.max_request_bytes)),
            **{"Content-Encoding": "gzip"},
        ),
        {413},
    ),
]


@pytest.mark.timeout(600)
async def test_the_worst_requests_stay_under_the_ceiling(tmp_path: Path) -> None:
    async with serve_process(tmp_path / "data", FHIRBOTS_ACCESS_LOG="false") as served:
        figures = []
        for name, request, expected in WORST:
            status = await asyncio.to_thread(request, served)
            assert status in expected, (name, status)
            figures.append((name, status, peak_mb(served.pid)))
    print("\npeak resident set of the API process (MB):")
    for name, status, peak in figures:
        print(f"  after {name:<30} {status}  {peak:7.0f}")
    assert max(peak for *_, peak in figures) < CEILING_MB, figures
