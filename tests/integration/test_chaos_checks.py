"""The chaos run's checks find what they are there to find: a lost write, a lost notification,
an event number used twice, a missing bot run, a bot run under a second key, a fault not
recovered from; and they count repeats on the fault they followed."""

from __future__ import annotations

from typing import Any

from tests.integration.chaos.checks import FLAG_SYSTEM, Fault, verify
from tests.integration.chaos.load import Write
from tests.integration.chaos.receiver import Receipt

SUB = "rest"
BOT_SUB = "default/bot"


def _write(seq: int) -> Write:
    return Write(
        seq, 0, 100.0 + seq, acked=101.0 + seq, status=201, resource=f"Patient/p{seq}/_history/1"
    )


def _receipt(seq: int, number: int, at: float = 200.0, nid: str | None = None) -> Receipt:
    return Receipt(at, SUB, number, nid or f"n{seq}", f"Patient/p{seq}/_history/1")


def _flag(seq: int, number: int, at: str = "2026-01-01T00:00:00+00:00") -> dict[str, Any]:
    return {
        "subject": {"reference": f"Patient/p{seq}"},
        "identifier": [{"system": FLAG_SYSTEM, "value": f"{BOT_SUB}:{number}"}],
        "meta": {"lastUpdated": at},
    }


def _fault(recovered: float | None = 50.0) -> Fault:
    return Fault("kill -9 matcher1", injected=10.0, repaired=20.0, recovered=recovered)


def test_a_clean_run_has_no_violations_and_counts_repeats_on_their_fault() -> None:
    writes = [_write(0), _write(1)]
    receipts = [_receipt(0, 1), _receipt(1, 2), _receipt(1, 2, at=300.0, nid="n1")]
    flags = [_flag(0, 1), _flag(1, 2), _flag(1, 2)]
    fault = _fault()

    report = verify(writes, {w.resource or "" for w in writes}, receipts, flags, [fault])

    assert report.violations == []
    assert (report.acknowledged, report.deliveries, report.duplicate_deliveries) == (2, 3, 1)
    assert (report.bot_runs, report.duplicate_bot_runs) == (3, 1)
    assert (fault.duplicate_deliveries, fault.duplicate_bot_runs) == (1, 1)
    assert "kill -9 matcher1" in report.render()


def test_every_kind_of_loss_and_reuse_is_a_violation() -> None:
    writes = [_write(0), _write(1), _write(2)]
    receipts = [_receipt(0, 1), _receipt(2, 1)]  # p1 never delivered; number 1 used twice
    flags = [_flag(0, 1), _flag(0, 3)]  # p0 under two keys; p1, p2 never ran the bot
    stored = {"Patient/p0/_history/1"}  # p1, p2 lost

    report = verify(writes, stored, receipts, flags, [_fault(recovered=None)])

    found = "\n".join(report.violations)
    assert "write 1 acknowledged as Patient/p1/_history/1, not stored" in found
    assert "write 1 (Patient/p1/_history/1) never delivered" in found
    assert "rest-hook: event number 1 of rest used for" in found
    assert "bot ran for Patient/p0 under several keys" in found
    assert "write 2 (Patient/p2) never ran the bot" in found
    assert "kill -9 matcher1: not caught up" in found
