"""Cron schedules of bots."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhirbots.bots.cron import CronSchedule
from fhirbots.bots.errors import CronError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", "2024-01-01T10:00:30", "2024-01-01T10:01:00"),
        ("*/15 * * * *", "2024-01-01T10:01:00", "2024-01-01T10:15:00"),
        ("0 9 * * MON-FRI", "2024-01-05T09:00:00", "2024-01-08T09:00:00"),  # Fri -> Mon
        ("30 2 1 * *", "2024-01-01T03:00:00", "2024-02-01T02:30:00"),
        ("0 0 29 FEB *", "2024-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("0 12 * * 7", "2024-01-01T00:00:00", "2024-01-07T12:00:00"),  # 7 is Sunday
        ("0 0 13 * FRI", "2024-01-01T00:00:00", "2024-01-05T00:00:00"),  # day OR weekday
        ("5,10-12/2 8 * * *", "2024-01-01T08:06:00", "2024-01-01T08:10:00"),
        ("0 23 31 DEC *", "2024-06-01T00:00:00", "2024-12-31T23:00:00"),
    ],
)
def test_next_after(expression: str, after: str, expected: str) -> None:
    schedule = CronSchedule.parse(expression)
    fired = schedule.next_after(at(after))
    assert fired == at(expected)
    assert schedule.matches(fired)


def test_matches_follows_cron_day_rule() -> None:
    schedule = CronSchedule.parse("0 0 13 * FRI")
    assert schedule.matches(at("2024-09-13T00:00:00"))  # Friday the 13th
    assert schedule.matches(at("2024-01-13T00:00:00"))  # a Saturday, but the 13th
    assert not schedule.matches(at("2024-01-14T00:00:00"))
    weekdays_only = CronSchedule.parse("0 0 * * MON")
    assert not weekdays_only.matches(at("2024-01-13T00:00:00"))


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "5 fields"),
        ("60 * * * *", "minute field: 60 is outside 0-59"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("* * * * 8", "day of week"),
        ("*/0 * * * *", "bad step"),
        ("5-1 * * * *", "backwards"),
        ("x * * * *", "not a number"),
    ],
)
def test_bad_expressions_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        CronSchedule.parse(expression)


def test_impossible_date_never_fires() -> None:
    with pytest.raises(CronError, match="never fires"):
        CronSchedule.parse("0 0 31 2 *").next_after(at("2024-01-01T00:00:00"))
