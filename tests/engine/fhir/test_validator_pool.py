"""Bulk validation gives the same answers in worker processes as in-process."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from fhirbots.engine.fhir import validator_pool
from fhirbots.engine.fhir.validator_pool import BulkValidator
from fhirbots.engine.fhir.validator_pool import _validate_chunk as validate_chunk


def items() -> list[tuple[Any, str | None]]:
    good = {"resourceType": "Patient", "name": [{"family": "A"}]}
    bad = {"resourceType": "Patient", "birthDate": "soon"}
    wrong_type = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    return [(good, None), (bad, None), (wrong_type, "Patient"), (good, "Patient")] * 5


async def test_pool_and_in_process_agree() -> None:
    local = await BulkValidator(processes=1).validate_many(items())
    pooled = BulkValidator(processes=2, threshold=4)
    pooled.start()
    try:
        remote = await pooled.validate_many(items())
    finally:
        pooled.close()
    assert remote == local
    assert [bool(p) for p in local[:4]] == [False, True, True, False]
    assert local[1][0].path == "Patient.birthDate"


async def test_warm_starts_every_worker_before_the_first_batch() -> None:
    pooled = BulkValidator(processes=2, threshold=4)
    assert pooled.warm() == []  # not started: nothing to warm
    pooled.start()
    try:
        ready = await asyncio.gather(*(asyncio.wrap_future(f) for f in pooled.warm()))
        assert len(ready) == 2
        assert pooled._pool is not None
        assert len(pooled._pool._processes) == 2  # both spawned, each past its initializer
        assert await pooled.validate_many(items()) == await BulkValidator(1).validate_many(items())
    finally:
        pooled.close()


async def test_a_worker_validates_the_custom_bot_type() -> None:
    # A spawned worker starts from a fresh interpreter: it knows Bot only if the validation
    # facade does by construction, not because the engine was built in the parent process.
    bot = {"resourceType": "Bot", "name": "b", "code": "def handler(fhir, event):\n    pass\n"}
    nameless = {"resourceType": "Bot", "code": "x = 1"}
    pooled = BulkValidator(processes=2, threshold=1)
    pooled.start()
    try:
        ok, bad = await pooled.validate_many([(bot, "Bot"), (nameless, None)])
    finally:
        pooled.close()
    assert ok == ()
    assert [p.path for p in bad] == ["Bot.name"]


def _in_a_worker_only(chunk: Any) -> Any:
    """``_validate_chunk``, refusing to run in the process that started the pool."""
    assert os.getpid() != int(os.environ["VALIDATOR_TEST_PARENT"]), "validated on the caller"
    return validate_chunk(chunk)


async def test_heavy_items_go_to_the_workers_even_when_few(monkeypatch: Any) -> None:
    monkeypatch.setenv("VALIDATOR_TEST_PARENT", str(os.getpid()))  # the workers inherit it
    pooled = BulkValidator(processes=2, threshold=1000)
    pooled.start()
    try:
        expected = await BulkValidator(1).validate_many(items()[:2])
        monkeypatch.setattr(validator_pool, "_validate_chunk", _in_a_worker_only)
        assert await pooled.validate_many(items()[:2], heavy=True) == expected
        with pytest.raises(AssertionError, match="validated on the caller"):
            await pooled.validate_many(items()[:2])
    finally:
        pooled.close()
