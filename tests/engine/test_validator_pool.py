"""Bulk validation gives the same answers in worker processes as in-process."""

from __future__ import annotations

from typing import Any

from engine.validator_pool import BulkValidator


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
