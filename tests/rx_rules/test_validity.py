"""Date rules: FHIR date reading, six-month and 28-day validity, the future grace."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.services.rx_rules.validity import (
    FhirDate,
    add_months,
    cd_last_day,
    evaluation_date,
    is_in_future,
    parse_fhir_date,
    six_month_last_day,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("start,last", [
    ("2025-01-15", "2025-07-14"), ("2025-08-31", "2026-02-28"), ("2025-08-30", "2026-02-28"),
    ("2025-08-29", "2026-02-28"), ("2025-08-28", "2026-02-27"), ("2023-08-29", "2024-02-28"),
    ("2023-08-31", "2024-02-29"), ("2026-03-31", "2026-09-30"), ("2026-05-31", "2026-11-30"),
    ("2026-12-31", "2027-06-30"), ("2026-07-01", "2026-12-31"), ("2026-09-01", "2027-02-28"),
    ("2027-09-01", "2028-02-29"), ("2026-01-01", "2026-06-30"), ("9999-07-01", "9999-12-31"),
    ("9999-12-31", "9999-12-31"),
])
def test_six_month_last_day(start: str, last: str) -> None:
    expected = date.fromisoformat(last) if start != "9999-12-31" else date.max
    assert six_month_last_day(date.fromisoformat(start)) == expected


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(9998, 1, 1)))
def test_six_months_is_about_half_a_year(start: date) -> None:
    last = six_month_last_day(start)
    assert 180 <= (last - start).days <= 183
    # The next start date's window never ends earlier (monotone).
    assert six_month_last_day(start + timedelta(days=1)) >= last


def test_add_months() -> None:
    assert add_months(date(2026, 1, 31), 1) is None
    assert add_months(date(2026, 1, 31), 2) == date(2026, 3, 31)
    assert add_months(date(2026, 11, 30), 3) is None
    assert add_months(date(9999, 12, 1), 1) is None


def test_cd_last_day() -> None:
    assert cd_last_day(date(2026, 11, 1)) == date(2026, 11, 29)  # RPS: 1 Nov -> 29 Nov
    assert cd_last_day(date.max) == date.max


@pytest.mark.parametrize("text,expected", [
    ("2026", FhirDate(2026)),
    ("2026-11", FhirDate(2026, 11)),
    ("2026-11-20", FhirDate(2026, 11, date(2026, 11, 20))),
    ("2026-13", None), ("2026-02-30", None), ("20261120", None), ("", None), (None, None),
    ("2026-11-20T10:00:00", None), ("2026-11-20T25:00:00Z", None), (20261120, None),
])
def test_parse_fhir_date(text, expected) -> None:
    assert parse_fhir_date(text) == expected


def test_parse_fhir_datetime() -> None:
    value = parse_fhir_date("2026-11-20T23:30:00-02:00")
    assert value.instant == datetime(2026, 11, 21, 1, 30, tzinfo=UTC)
    assert value.london_date == date(2026, 11, 21)
    assert parse_fhir_date("2026-06-30T23:30:00Z").london_date == date(2026, 7, 1)  # BST
    assert parse_fhir_date("2026-11-20T10:00:00.123456789Z") is not None
    assert parse_fhir_date("0001-01-01T00:00:00+14:00") is None


def test_evaluation_date_is_in_london() -> None:
    assert evaluation_date(datetime(2026, 6, 30, 23, 30, tzinfo=UTC)) == date(2026, 7, 1)
    assert evaluation_date(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)) == date(2026, 12, 31)
    assert evaluation_date(datetime(2026, 6, 30, 23, 30)) == date(2026, 7, 1)  # naive = UTC


@pytest.mark.parametrize("text,future", [
    ("2026-11-20T12:05:00Z", False), ("2026-11-20T12:05:01Z", True),
    ("2026-11-20T13:05:00+01:00", False), ("2026-11-20", False), ("2026-11-21", True),
    ("2026-11", False), ("2026-12", True), ("2026", False), ("2027", True),
    ("2025-12-31", False),
])
def test_is_in_future(text: str, future: bool) -> None:
    assert is_in_future(parse_fhir_date(text), NOW) is future
