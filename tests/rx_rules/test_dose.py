"""Daily dose and days of supply: strengths, units, frequencies."""

from __future__ import annotations

from decimal import Decimal

import pytest

from pharmacy.services.rx_rules.dose import (
    Strength,
    daily_dose,
    dose_mg,
    doses_per_day,
    parse_strength,
    supply_days,
    to_decimal,
    whole_days,
)


@pytest.mark.parametrize("text,expected", [
    ("500mg", Strength(Decimal(500))),
    ("2.5mg", Strength(Decimal("2.5"))),
    ("62.5micrograms", Strength(Decimal("0.0625"))),
    ("25micrograms", Strength(Decimal("0.025"))),
    ("1g", Strength(Decimal(1000))),
    ("250mg/5ml", Strength(Decimal(250), Decimal(5), "ml")),
    ("1mg/ml", Strength(Decimal(1), Decimal(1), "ml")),
    ("300micrograms/0.3ml", Strength(Decimal("0.3"), Decimal("0.3"), "ml")),
    ("100micrograms/dose", Strength(Decimal("0.1"), Decimal(1), "dose")),
    ("8mg/500mg", None), ("800units", None), ("100units/ml (3ml)", None),
    ("0.5ml dose", None), ("", None), (None, None), ("mg", None),
])
def test_parse_strength(text, expected) -> None:
    assert parse_strength(text) == expected


def test_mg_per_ml() -> None:
    assert parse_strength("250mg/5ml").mg_per_ml == 50
    assert parse_strength("500mg").mg_per_ml is None


@pytest.mark.parametrize("quantity,strength,expected", [
    ({"value": 2, "unit": "tablet"}, "500mg", 1000),
    ({"value": 1, "code": "g", "system": "http://unitsofmeasure.org"}, "500mg", 1000),
    ({"value": 250, "code": "ug", "system": "http://unitsofmeasure.org"}, None, "0.25"),
    ({"value": 250, "unit": "micrograms"}, None, "0.25"),
    ({"value": 10, "unit": "ml"}, "250mg/5ml", 500),
    ({"value": 10, "code": "mL", "system": "http://unitsofmeasure.org"}, "250mg/5ml", 500),
    ({"value": 10, "code": "258773002", "system": "http://snomed.info/sct"}, "250mg/5ml", 500),
    ({"value": 2, "unit": "puff"}, "100micrograms/dose", "0.2"),
    ({"value": 2, "unit": "tablet"}, "8mg/500mg", None),
    ({"value": 2, "unit": "tablet"}, None, None),
    ({"unit": "tablet"}, "500mg", None),
    ({"value": -1, "unit": "tablet"}, "500mg", None),
    ({"value": 5, "code": "MG", "system": "http://unitsofmeasure.org"}, "500mg", 2500),
    # Unit text as typed: "G" and "Grams" are grams, as the unit's kind already said.
    ({"value": 1, "unit": "G"}, None, 1000),
    ({"value": 2, "unit": "Grams"}, None, 2000),
])
def test_dose_mg(quantity, strength, expected) -> None:
    result = dose_mg(quantity, parse_strength(strength))
    assert result == (Decimal(str(expected)) if expected is not None else None)


@pytest.mark.parametrize("repeat,expected", [
    ({"frequency": 4, "period": 1, "periodUnit": "d"}, 4),
    ({"period": 1, "periodUnit": "d"}, 1),
    ({"frequency": 1, "period": 8, "periodUnit": "h"}, 3),
    ({"frequency": 1, "period": 1, "periodUnit": "wk"}, "0.142857"),
    ({"frequency": 2, "period": 0.5, "periodUnit": "d"}, 4),
    ({"frequency": 1, "period": 30, "periodUnit": "min"}, 48),
    ({"frequency": 1, "period": 1, "periodUnit": "mo"}, "0.033333"),
    ({"frequency": 1, "period": 1, "periodUnit": "a"}, "0.00274"),
    ({"timeOfDay": ["08:00:00", "20:00:00"]}, 2),
    ({"when": ["MORN", "NIGHT", "AFT"]}, 3),
    ({"frequency": 1, "period": 0, "periodUnit": "d"}, None),
    ({"frequency": 1, "period": 1, "periodUnit": "fortnight"}, None),
    ({"frequency": 1}, None), ({}, None), (None, None), ("x", None),
])
def test_doses_per_day(repeat, expected) -> None:
    result = doses_per_day(repeat)
    assert result == (Decimal(str(expected)) if expected is not None else None)


def _dosage(value, unit="tablet", frequency=1, period=1, period_unit="d", sequence=None):
    dosage = {"timing": {"repeat": {"frequency": frequency, "period": period,
                                    "periodUnit": period_unit}},
              "doseAndRate": [{"doseQuantity": {"value": value, "unit": unit}}]}
    if sequence is not None:
        dosage["sequence"] = sequence
    return dosage


def test_daily_dose_counts_and_mass() -> None:
    daily = daily_dose([_dosage(2, frequency=4)], parse_strength("500mg"))
    assert daily.amount == 8 and daily.unit_kind == "count" and daily.mg == 4000


def test_daily_dose_exact_over_a_week() -> None:
    daily = daily_dose([_dosage(28, period_unit="wk")], parse_strength("80mg"))
    assert daily.mg == 320 and str(daily.mg) == "320"


def test_daily_dose_same_sequence_summed_different_sequence_max() -> None:
    strength = parse_strength("500mg")
    together = [_dosage(1, sequence=1), _dosage(2, sequence=1)]
    assert daily_dose(together, strength).mg == 1500
    following = [_dosage(1, sequence=1), _dosage(2, sequence=2)]
    assert daily_dose(following, strength).mg == 1000


def test_daily_dose_mixed_units_in_one_group() -> None:
    daily = daily_dose([_dosage(1), _dosage(500, unit="mg")], parse_strength("500mg"))
    assert daily.mg == 1000 and daily.unit_kind == "mass"


def test_daily_dose_without_timing() -> None:
    assert daily_dose([{"doseAndRate": [{"doseQuantity": {"value": 1}}]}], None) is None
    assert daily_dose([{"text": "as directed"}], None) is None
    assert daily_dose(["x", None, 5], None) is None


def test_supply_days() -> None:
    strength = parse_strength("10mg")
    tablets = daily_dose([_dosage(1, frequency=2)], strength)
    assert supply_days({"value": 60, "unit": "tablets"}, tablets, strength) == 30
    mg = daily_dose([_dosage(20, unit="mg", frequency=2)], strength)
    assert supply_days({"value": 60, "unit": "tablet"}, mg, strength) == 15
    liquid = parse_strength("1mg/ml")
    ml = daily_dose([_dosage(30, unit="ml")], liquid)
    assert supply_days({"value": 420, "unit": "ml"}, ml, liquid) == 14
    assert supply_days({"value": 1, "unit": "l"}, ml, liquid) == Decimal("33.333333")
    mg_liquid = daily_dose([_dosage(30, unit="mg")], liquid)
    assert supply_days({"value": 300, "unit": "ml"}, mg_liquid, liquid) == 10
    assert supply_days({"value": 2, "unit": "pack"}, tablets, strength) is None
    coded = {"value": 28, "unit": "tablet", "system": "http://snomed.info/sct",
             "code": "428673006"}
    assert supply_days(coded, tablets, strength) == 14
    assert supply_days({"value": 28}, tablets, strength) == 14  # no unit: the dose's


@pytest.mark.parametrize("value,expected", [
    (1, 1), (1.5, "1.5"), ("2.25", "2.25"), (Decimal("3"), 3), (True, None), (None, None),
    ("abc", None), (float("nan"), None), (float("inf"), None), ("1e999999", None),
    (10**40, None), ("1e-20", None), (0, 0), ([1], None),
])
def test_to_decimal(value, expected) -> None:
    assert to_decimal(value) == (Decimal(str(expected)) if expected is not None else None)


def test_whole_days() -> None:
    assert whole_days(Decimal("27.9")) == 27
    assert whole_days(None) is None and whole_days(Decimal(-1)) is None
    assert whole_days(Decimal(10) ** 9) is None
