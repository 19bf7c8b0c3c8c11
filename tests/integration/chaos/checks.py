"""What must hold after the chaos run, and the figures it prints.

* every acknowledged write is stored (read back through the API, same version);
* every acknowledged write's notification reached the rest-hook endpoint at least once,
  carrying an event number, and no event number of a subscription was used for two
  different events (nor one event numbered twice);
* every acknowledged write ran the bot, whose Flag carries the run's idempotency key
  (``<project>/<subscription>:<eventNumber>``): a patient's Flags may repeat only with the same
  key, and a key belongs to one patient;
* after each fault the pipeline caught up within :data:`RECOVERY_BOUND` seconds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.integration.chaos.load import Write
from tests.integration.chaos.receiver import Receipt

__all__ = ["RECOVERY_BOUND", "Fault", "Report", "verify"]

RECOVERY_BOUND = 90.0
"""Seconds within which the pipeline must have caught up after a fault: a killed consumer's
partitions move after the broker's session timeout (10 s), a restarted broker or database
takes some seconds more, and retried deliveries back off."""

FLAG_SYSTEM = "urn:fhirbots:chaos"
"""Identifier system of the bot's Flags; the value is the run's idempotency key."""


@dataclass
class Fault:
    """One fault of the run and how long the pipeline took to come back."""

    name: str
    injected: float
    repaired: float = 0.0
    recovered: float | None = None
    """When every write acknowledged before the repair, and one after it, was delivered."""
    duplicate_deliveries: int = 0
    """Rest-hook requests repeating a notification, made between this fault and the next."""
    duplicate_bot_runs: int = 0
    """Bot runs repeating an idempotency key, made between this fault and the next."""

    @property
    def recovery_seconds(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.injected

    @property
    def outage_seconds(self) -> float:
        """How long the fault itself lasted (until its repair: a restart, a mended link)."""
        return self.repaired - self.injected


@dataclass
class Report:
    """The figures of a run and every violation found."""

    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    deliveries: int = 0
    duplicate_deliveries: int = 0
    bot_runs: int = 0
    duplicate_bot_runs: int = 0
    seconds: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    revived: list[str] = field(default_factory=list)
    """Processes that exited on their own and were started again (as by an orchestrator)."""
    violations: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The figures as text."""
        lines = [
            f"chaos run: {self.seconds:.0f} s, {len(self.faults)} faults",
            f"  writes sent {self.sent}, acknowledged {self.acknowledged}, stored {self.stored}",
            f"  rest-hook deliveries {self.deliveries} (duplicates {self.duplicate_deliveries})",
            f"  bot runs {self.bot_runs} (duplicates {self.duplicate_bot_runs}, "
            "same idempotency key)",
            "  per fault: outage (until restarted and ready, or mended), recovery (from the fault",
            "  until every write sent before the repair, and one sent after, was delivered),",
            "  duplicate deliveries/bot runs made between the fault and the next one",
        ]
        for fault in self.faults:
            took = fault.recovery_seconds
            shown = "not within bound" if took is None else f"recovery {took:5.1f} s"
            lines.append(
                f"    {fault.name:<34} outage {fault.outage_seconds:5.1f} s  {shown}  "
                f"duplicates {fault.duplicate_deliveries}/{fault.duplicate_bot_runs}"
            )
        if self.revived:
            lines.append(f"  exited on their own, started again: {', '.join(self.revived)}")
        lines.extend(f"  VIOLATION: {v}" for v in self.violations[:40])
        if len(self.violations) > 40:
            lines.append(f"  ... and {len(self.violations) - 40} more violations")
        return "\n".join(lines)


def _by_event_number(
    numbered: Iterable[tuple[str, int, str]], what: str, violations: list[str]
) -> None:
    """Each (subscription, event number) names one event, each event one number."""
    events: dict[tuple[str, int], set[str]] = defaultdict(set)
    numbers: dict[tuple[str, str], set[int]] = defaultdict(set)
    for subscription, number, event in numbered:
        events[(subscription, number)].add(event)
        numbers[(subscription, event)].add(number)
    for (subscription, number), seen in sorted(events.items()):
        if len(seen) > 1:
            violations.append(
                f"{what}: event number {number} of {subscription} used for {sorted(seen)}"
            )
    for (subscription, event), used in sorted(numbers.items()):
        if len(used) > 1:
            violations.append(f"{what}: {event} numbered {sorted(used)} by {subscription}")


def verify(
    writes: Sequence[Write],
    stored: set[str],
    receipts: Sequence[Receipt],
    flags: Sequence[dict[str, Any]],
    faults: Sequence[Fault],
) -> Report:
    """Check a finished run.

    Args:
        writes: Every write of the load.
        stored: ``Patient/id/_history/version`` of each acknowledged write read back.
        receipts: Every notification the rest-hook endpoint got.
        flags: Every Flag the bot wrote.
        faults: The faults, with their recovery times.
    """
    report = Report(faults=list(faults))
    acked = [w for w in writes if w.acked is not None and w.resource is not None]
    report.sent, report.acknowledged, report.stored = len(writes), len(acked), len(stored)
    for write in acked:
        if write.resource not in stored:
            report.violations.append(
                f"write {write.seq} acknowledged as {write.resource}, not stored"
            )
    _deliveries(report, acked, receipts)
    _bot_runs(report, acked, flags)
    for fault in faults:
        took = fault.recovery_seconds
        if took is None or took > RECOVERY_BOUND:
            report.violations.append(f"{fault.name}: not caught up within {RECOVERY_BOUND:g} s")
    return report


def _deliveries(report: Report, acked: Sequence[Write], receipts: Sequence[Receipt]) -> None:
    """Each acknowledged write delivered with its own event number; repeats counted."""
    delivered = {r.resource for r in receipts}
    times: dict[str, list[float]] = defaultdict(list)
    for receipt in receipts:
        times[receipt.notification_id].append(receipt.at)
        if receipt.event_number < 1:
            report.violations.append(f"{receipt.resource} delivered without an event number")
    report.deliveries = len(receipts)
    report.duplicate_deliveries = _repeats(report.faults, times.values(), "duplicate_deliveries")
    _by_event_number(
        ((r.subscription, r.event_number, r.resource) for r in receipts),
        "rest-hook",
        report.violations,
    )
    for write in acked:
        if write.resource not in delivered:
            report.violations.append(f"write {write.seq} ({write.resource}) never delivered")


def _bot_runs(report: Report, acked: Sequence[Write], flags: Sequence[dict[str, Any]]) -> None:
    """Each acknowledged write ran the bot; repeats only under one idempotency key."""
    keys: dict[str, set[str]] = defaultdict(set)
    times: dict[str, list[float]] = defaultdict(list)
    numbered: list[tuple[str, int, str]] = []
    for flag in flags:
        subject = flag["subject"]["reference"]
        key = next(i["value"] for i in flag["identifier"] if i["system"] == FLAG_SYSTEM)
        keys[subject].add(key)
        times[key].append(datetime.fromisoformat(flag["meta"]["lastUpdated"]).timestamp())
        subscription, _, number = key.rpartition(":")
        numbered.append((subscription, int(number), subject))
    report.bot_runs = len(flags)
    report.duplicate_bot_runs = _repeats(report.faults, times.values(), "duplicate_bot_runs")
    _by_event_number(numbered, "bot", report.violations)
    for subject, used in sorted(keys.items()):
        if len(used) > 1:
            report.violations.append(f"bot ran for {subject} under several keys {sorted(used)}")
    for write in acked:
        assert write.resource is not None
        subject = write.resource.split("/_history/")[0]
        if subject not in keys:
            report.violations.append(f"write {write.seq} ({subject}) never ran the bot")


def _repeats(faults: Sequence[Fault], times: Iterable[list[float]], counter: str) -> int:
    """How many times something happened again (all but the first of each list of times);
    each repeat is also counted on the fault it followed, in the fault's ``counter``."""
    total = 0
    for each in times:
        for at in sorted(each)[1:]:
            total += 1
            fault = next((f for f in reversed(faults) if f.injected <= at), None)
            if fault is not None:
                setattr(fault, counter, getattr(fault, counter) + 1)
    return total
