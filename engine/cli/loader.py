"""Bulk loading of FHIR Bundles (and single resources) from files, for ``fhirbots load``."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from fhirbots.engine.cli.client import ClientError, FhirClient

__all__ = ["LoadSummary", "find_files", "load_files"]

CONCURRENCY = 4
"""Bundles in flight at once; enough to keep a two-core server busy."""


@dataclass
class LoadSummary:
    """What a load did."""

    files: int = 0
    resources: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Resources written."""
        return sum(self.resources.values())


def find_files(path: Path) -> list[Path]:
    """The JSON files at ``path`` (a file, or every ``*.json`` below a folder, sorted)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*.json") if p.is_file())
    return [path]


def _count(document: dict[str, Any]) -> Counter[str]:
    if document.get("resourceType") != "Bundle":
        return Counter([str(document.get("resourceType"))])
    return Counter(
        str(e["resource"]["resourceType"])
        for e in document.get("entry") or []
        if isinstance(e.get("resource"), dict)
        and (e.get("request") or {}).get("method", "POST") in ("POST", "PUT")
    )


async def _load_one(client: FhirClient, path: Path) -> Counter[str]:
    document = orjson.loads(await asyncio.to_thread(path.read_bytes))
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("resourceType") == "Bundle":
        if document.get("type") not in ("transaction", "batch"):
            raise ValueError(f"Bundle.type {document.get('type')!r}: only transaction or batch")
        await client.request("POST", "", document)
    else:
        await client.request("POST", str(document.get("resourceType")), document)
    return _count(document)


async def load_files(
    client: FhirClient, files: Iterable[Path], *, progress: bool = True
) -> LoadSummary:
    """POST every file; a failing file is recorded and the others go on."""
    paths = list(files)
    summary = LoadSummary()
    semaphore = asyncio.Semaphore(CONCURRENCY)
    bar = tqdm(total=len(paths), unit="file", disable=not progress, desc="loading")

    async def one(path: Path) -> None:
        async with semaphore:
            try:
                summary.resources.update(await _load_one(client, path))
                summary.files += 1
            except (ClientError, ValueError, OSError) as exc:
                summary.failures.append((str(path), str(exc)))
            bar.update(1)
            bar.set_postfix(resources=summary.total)

    try:
        await asyncio.gather(*(one(p) for p in paths))
    finally:
        bar.close()
    return summary
