"""Properties of whole-bundle validation: order, date shifts, the validity boundaries."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from pharmacy.services.rx_rules import validate_bundle
from pharmacy.services.rx_rules.validity import six_month_last_day

from .builders import METHADONE_1MG_ML, item, rules, rx
from .test_examples import EXAMPLES, EXPECTED, WRITTEN, shift_dates

LONDON = ZoneInfo("Europe/London")
names = st.sampled_from(sorted(EXPECTED))


def london_noon(day: date) -> datetime:
    return datetime.combine(day, time(12), tzinfo=LONDON)


@settings(max_examples=40, deadline=None)
@given(names, st.integers(-20_000, 20_000))
def test_codes_do_not_depend_on_the_calendar_date(formulary, name: str, days: int) -> None:
    today = WRITTEN + timedelta(days=days)
    text = shift_dates((EXAMPLES / name).read_text(encoding="utf-8"), today)
    assert rules(validate_bundle(text, formulary, now=london_noon(today))) == EXPECTED[name]


@settings(max_examples=30, deadline=None)
@given(names, st.randoms(use_true_random=False))
def test_codes_do_not_depend_on_entry_order(formulary, name: str, rnd: random.Random) -> None:
    bundle = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    rnd.shuffle(bundle["entry"])
    bundle["entry"].insert(rnd.randrange(len(bundle["entry"]) + 1), {
        "fullUrl": "urn:uuid:5f1c1d9e-0000-4000-8000-000000000000",
        "resource": {"resourceType": "Organization", "name": "Unrelated"}})
    report = validate_bundle(bundle, formulary, now=london_noon(WRITTEN))
    assert sorted(rules(report)) == sorted(EXPECTED[name])


@settings(max_examples=40, deadline=None)
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)))
def test_six_month_boundary_for_any_start(formulary, start: date) -> None:
    bundle = rx(item(authored=start.isoformat()))
    last = six_month_last_day(start)
    assert rules(validate_bundle(bundle, formulary, now=london_noon(last))) == []
    after = validate_bundle(bundle, formulary, now=london_noon(last + timedelta(days=1)))
    assert rules(after) == ["expired"]


@settings(max_examples=40, deadline=None)
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 1, 1)),
       st.times(), st.booleans())
def test_cd_window_for_any_start_and_time_of_day(formulary, start: date, at: time,
                                                 late: bool) -> None:
    mr = item(METHADONE_1MG_ML, dose=10, dose_unit={"unit": "ml"}, qty=140,
              qty_unit={"unit": "ml"}, words="one hundred and forty",
              authored=start.isoformat())
    day = start + timedelta(days=29 if late else 28)
    now = datetime.combine(day, at).replace(tzinfo=LONDON).astimezone(UTC)
    report = validate_bundle(rx(mr), formulary, now=now)
    assert rules(report) == (["cd-expired"] if late else [])
