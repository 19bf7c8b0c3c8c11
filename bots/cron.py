"""Cron schedules of bots (``Bot.cronString``): parse, match, next run time.

Five fields, as in Vixie cron: minute (0-59), hour (0-23), day of month (1-31), month (1-12
or JAN-DEC) and day of week (0-7 or SUN-SAT, 0 and 7 both Sunday). Each field is ``*``, a
value, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma-separated list of those. When
both day fields are restricted, a day matches if *either* does (cron's rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from fhirbots.bots.errors import CronError

__all__ = ["CronSchedule"]

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

_NO_NAMES: dict[str, int] = {}

_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, _NO_NAMES),
    ("hour", 0, 23, _NO_NAMES),
    ("day of month", 1, 31, _NO_NAMES),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)

MAX_SEARCH_DAYS = 366 * 8
"""Longest gap between runs a valid expression can have (Feb 29 on a given weekday recurs
within 28 years, but such a search is already absurd for a bot; eight years bounds the loop)."""


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    key = text.upper()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise CronError(f"cron {name} field: {text!r} is not a number")
    number = int(text)
    if not low <= number <= high:
        raise CronError(f"cron {name} field: {number} is outside {low}-{high}")
    return number


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"cron {name} field: bad step {step_text!r}")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start = _value(first, name, low, high, names)
            end = _value(last, name, low, high, names)
            if start > end:
                raise CronError(f"cron {name} field: range {body!r} runs backwards")
        else:
            start = _value(body, name, low, high, names)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed five-field cron expression."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 = Sunday ... 6 = Saturday (7 is folded into 0)."""
    days_restricted: bool
    weekdays_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Parse ``expression``.

        Raises:
            CronError: naming the field that is wrong.
        """
        parts = expression.split()
        if len(parts) != 5:
            raise CronError(f"cron expression needs 5 fields, got {len(parts)}: {expression!r}")
        parsed = [_field(p, *spec) for p, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in parsed[4])
        return cls(
            expression=expression,
            minutes=parsed[0],
            hours=parsed[1],
            days=parsed[2],
            months=parsed[3],
            weekdays=weekdays,
            days_restricted=not parts[2].startswith("*"),
            weekdays_restricted=not parts[4].startswith("*"),
        )

    def _day_matches(self, moment: datetime) -> bool:
        in_days = moment.day in self.days
        in_weekdays = (moment.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def matches(self, moment: datetime) -> bool:
        """Whether the schedule fires at ``moment`` (seconds are ignored)."""
        return (
            moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
            and self._day_matches(moment)
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first firing time strictly after ``moment`` (same tzinfo, seconds zeroed).

        Raises:
            CronError: the expression never fires (e.g. ``0 0 31 2 *``).
        """
        candidate = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = candidate + timedelta(days=MAX_SEARCH_DAYS)
        while candidate < limit:
            if candidate.month not in self.months or not self._day_matches(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0)
            elif candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0)
            elif candidate.minute not in self.minutes:
                candidate += timedelta(minutes=1)
            else:
                return candidate
        raise CronError(f"cron expression never fires: {self.expression!r}")
