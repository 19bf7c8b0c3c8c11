"""The steady load of the chaos run: FHIR creates at a fixed rate, alternating between the API
processes, each one recorded with whether (and when) it was acknowledged.

A write whose API process is down, or that times out, is not acknowledged: the checks hold the
engine only to what it acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

__all__ = ["Api", "Load", "Write"]

REQUEST_SECONDS = 30.0
"""How long one write may take before it counts as not acknowledged."""


class Api:
    """A FHIR client of the run: one session, the admin key, several API base URLs."""

    def __init__(self, bases: list[str], token: str) -> None:
        self.bases = bases
        self.token = token
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_SECONDS),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self, method: str, path: str, body: Any = None, *, base: int = 0
    ) -> tuple[int, Any]:
        """(status, JSON body or None) of one request to API process ``base``."""
        url = path if path.startswith("http") else f"{self.bases[base]}/{path}"
        data = None if body is None else orjson.dumps(body)
        async with self.session.request(method, url, data=data) as resp:
            raw = await resp.read()
            return resp.status, (orjson.loads(raw) if raw else None)

    async def expect(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """The JSON answer of a request that must succeed with ``status``."""
        got, answer = await self.call(method, path, body)
        assert got == status, f"{method} {path}: {got} {answer}"
        return answer

    async def every(self, query: str) -> list[dict[str, Any]]:
        """Every match of a search, following ``next`` links."""
        found: list[dict[str, Any]] = []
        url: str | None = query
        while url:
            bundle = await self.expect("GET", url)
            found.extend(
                e["resource"]
                for e in bundle.get("entry", [])
                if e.get("search", {}).get("mode", "match") == "match"
            )
            links = bundle.get("link", [])
            url = next((link["url"] for link in links if link["relation"] == "next"), None)
        return found


@dataclass
class Write:
    """One create of the load."""

    seq: int
    api: int
    sent: float
    acked: float | None = None
    """When a 2xx came back; None when it did not."""
    status: int | None = None
    resource: str | None = None
    """``Patient/id/_history/version`` of an acknowledged write."""
    error: str | None = None


@dataclass
class Load:
    """Writes ``rate`` Patients a second until stopped, alternating between API processes."""

    api: Api
    rate: float
    marker: str
    """Identifier system of the run's Patients."""
    writes: list[Write] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _inflight: set[asyncio.Task[None]] = field(default_factory=set)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chaos-load")

    async def stop(self) -> None:
        """Stop sending and wait for the writes in flight to be answered (or time out)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    @property
    def acknowledged(self) -> list[Write]:
        return [w for w in self.writes if w.acked is not None]

    async def _run(self) -> None:
        period = 1.0 / self.rate
        start = time.monotonic()
        while True:
            seq = len(self.writes)
            write = Write(seq, seq % len(self.api.bases), time.time())
            self.writes.append(write)
            task = asyncio.create_task(self._write(write))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            # Pacing of the load, not a wait for a state: the next write is due then.
            await asyncio.sleep(max(0.0, start + (seq + 1) * period - time.monotonic()))

    async def _write(self, write: Write) -> None:
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": self.marker, "value": str(write.seq)}],
            "gender": "female",
            "name": [{"family": f"Chaos{write.seq}"}],
        }
        try:
            status, body = await self.api.call("POST", "Patient", patient, base=write.api)
        except (aiohttp.ClientError, TimeoutError) as exc:
            write.error = type(exc).__name__
            return
        write.status = status
        if 200 <= status < 300 and body is not None:
            write.acked = time.time()
            write.resource = f"Patient/{body['id']}/_history/{body['meta']['versionId']}"
        else:
            write.error = f"HTTP {status}"
