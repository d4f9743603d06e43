"""Dates of a prescription: FHIR date/dateTime reading and the legal validity periods.

The evaluation date is the date in Europe/London. Six-month validity (Human Medicines
Regulations 2012 reg 217) ends on the same calendar date six months after the appropriate
date, minus one day; where that date does not exist, on the last day of that month
(2025-01-15 -> 2025-07-14, 2025-08-31 -> 2026-02-28). Controlled drugs of Schedule 2-4
(Misuse of Drugs Regulations 2001 reg 16) are valid up to and including start + 28 days.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
CD_VALIDITY_DAYS = 28
FUTURE_GRACE = timedelta(minutes=5)

_PARTIAL_RE = re.compile(r"([0-9]{4})(?:-([0-9]{2}))?")


@dataclass(frozen=True)
class FhirDate:
    """A FHIR date or dateTime at its precision: year, month, day, or an instant."""

    year: int
    month: int | None = None
    day: date | None = None
    instant: datetime | None = None  # timezone-aware, when a time was given

    @property
    def london_date(self) -> date | None:
        """The calendar date in Europe/London, where the value names a single day."""
        if self.instant is not None:
            return self.instant.astimezone(LONDON).date()
        return self.day


def parse_fhir_date(value: Any) -> FhirDate | None:
    """Read a FHIR ``date`` / ``dateTime`` string; None for anything else."""
    if not isinstance(value, str) or not 4 <= len(value) <= 40:
        return None
    partial = _PARTIAL_RE.fullmatch(value)
    try:
        if partial:
            month = int(partial[2]) if partial[2] else None
            if month is not None and not 1 <= month <= 12:
                return None
            return FhirDate(int(partial[1]), month)
        if len(value) == 10:
            day = date.fromisoformat(value)
            return FhirDate(day.year, day.month, day)
        if "T" not in value:
            return None
        instant = datetime.fromisoformat(value)
        if instant.tzinfo is None:
            return None  # FHIR requires a time zone with a time
        instant.astimezone(UTC)  # raises OverflowError for 0001-01-01T00:00:00+14:00
        return FhirDate(instant.year, instant.month, instant.date(), instant)
    except (ValueError, OverflowError):
        return None


def evaluation_date(now: datetime) -> date:
    """Today in Europe/London (a naive ``now`` is taken as UTC)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.astimezone(LONDON).date()


def is_in_future(value: FhirDate, now: datetime) -> bool:
    """Whether a date or dateTime is after now: an instant with 5 minutes' grace, a date (or a
    month or year) only when it starts after today."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if value.instant is not None:
        return value.instant > now + FUTURE_GRACE
    today = evaluation_date(now)
    if value.day is not None:
        return value.day > today
    if value.month is not None:
        return (value.year, value.month) > (today.year, today.month)
    return value.year > today.year


def add_months(start: date, months: int) -> date | None:
    """The same calendar date ``months`` later, or None where it does not exist."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    if not 1 <= year <= 9999 or start.day > calendar.monthrange(year, month)[1]:
        return None
    return date(year, month, start.day)


def six_month_last_day(start: date) -> date:
    """The last day of six-month validity beginning with ``start``."""
    same_day = add_months(start, 6)
    if same_day is not None:
        return same_day - timedelta(days=1)
    month_index = start.month - 1 + 6
    year, month = start.year + month_index // 12, month_index % 12 + 1
    if year > 9999:
        return date.max
    return date(year, month, calendar.monthrange(year, month)[1])


def cd_last_day(start: date) -> date:
    """The last day a Schedule 2-4 controlled drug may be supplied: start + 28 days."""
    try:
        return start + timedelta(days=CD_VALIDITY_DAYS)
    except OverflowError:
        return date.max
