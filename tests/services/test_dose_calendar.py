"""Dose calendars: reading dosage instructions, the calendar, the packing list, the page."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from flask import Flask, render_template

from pharmacy.models import PrescriptionStatus
from pharmacy.services.dose_calendar import (
    DoseItem,
    Slot,
    calendar_for_patient,
    dose_calendar,
    packing_list,
    parse_dosage,
    quantity_label,
)

from .rx_data import patient_with_account, repeat_prescription

M, N, E, B = Slot.MORNING, Slot.NOON, Slot.EVENING, Slot.NIGHT
START = date(2026, 11, 30)


def _d(**slots: str) -> dict[Slot, Decimal]:
    names = {"m": M, "n": N, "e": E, "b": B}
    return {names[k]: Decimal(v) for k, v in slots.items()}


@pytest.mark.parametrize(("text", "doses", "unit"), [
    ("Take one tablet twice a day", _d(m="1", e="1"), "tablet"),
    ("one in the morning and one at night", _d(m="1", b="1"), "tablet"),
    ("1 tablet three times daily", _d(m="1", n="1", e="1"), "tablet"),
    ("two at night", _d(b="2"), "tablet"),
    ("take one daily", _d(m="1"), "tablet"),
    ("one every 8 hours", _d(m="1", n="1", b="1"), "tablet"),
    ("30ml once daily", _d(m="30"), "ml"),
    ("Take ONE capsule FOUR times a day WITH FOOD", _d(m="1", n="1", e="1", b="1"), "capsule"),
    ("one tablet a day", _d(m="1"), "tablet"),
    ("1 tab b.d.", _d(m="1", e="1"), "tablet"),
    ("half a tablet in the morning", _d(m="0.5"), "tablet"),
    ("one and a half tablets at night", _d(b="1.5"), "tablet"),
    ("take 1/2 tablet od", _d(m="0.5"), "tablet"),
    ("two 5ml spoonfuls at bedtime", _d(b="10"), "ml"),
    ("one tablet in the morning and evening", _d(m="1", e="1"), "tablet"),
    ("two tablets in the morning and one at lunchtime", _d(m="2", n="1"), "tablet"),
    ("one tablet twice a day and one at night", _d(m="1", e="1", b="1"), "tablet"),
    ("one tablet daily at night", _d(b="1"), "tablet"),
    ("1 capsule with breakfast", _d(m="1"), "capsule"),
    ("one tablet to be taken each morning with or after food", _d(m="1"), "tablet"),
    ("one nocte", _d(b="1"), "tablet"),
    ("two puffs every 12 hours", _d(m="2", e="2"), "puff"),
])
def test_instructions_become_doses_per_slot(text: str, doses: dict[Slot, Decimal],
                                            unit: str) -> None:
    parsed = parse_dosage(text, default_unit="Tablets")
    assert (parsed.problem, parsed.as_required) == (None, False)
    assert dict(parsed.doses) == doses
    assert list(parsed.doses) == [s for s in Slot if s in doses]  # in the day's order
    assert parsed.unit == unit


@pytest.mark.parametrize("text", ["as required", "One tablet up to four times a day when "
                                  "required for pain", "1 puff PRN", "two at night if needed"])
def test_when_required_is_never_packed(text: str) -> None:
    parsed = parse_dosage(text)
    assert parsed.as_required and not parsed.doses and parsed.problem is None


@pytest.mark.parametrize(("text", "reason"), [
    (None, "No dosage instructions"),
    ("every 8 hours", "not how much"),
    ("one or two tablets at night", "dose range"),
    ("1-2 tablets four times a day", "dose range"),
    ("one tablet once a week", "Not the same dose every day"),
    ("one on alternate days", "Not the same dose every day"),
    ("two tablets three times a day for 5 days", "course"),
    ("six tablets daily reducing by one each day", "course"),
    ("20mg once daily", "mg"),
    ("as directed", "As directed"),
    ("one tablet twice daily at night", "does not match"),
    ("one tablet every 4 hours", "does not fit"),
    ("one tablet five times a day", "more than the four"),
    ("apply thinly twice daily", "Not understood: 'apply thinly'"),
    ("take one tablet at 8am", "Not understood"),
    ("one tablet", "does not say how often"),
    ("one ml in the morning and one tablet at night", "mixes units"),
    ("one in the morning in the morning", "same time of day"),
])
def test_what_is_not_understood_is_reported_not_guessed(text: str | None, reason: str) -> None:
    parsed = parse_dosage(text, default_unit="tablet")
    assert parsed.problem is not None and reason in parsed.problem
    assert not parsed.doses and not parsed.as_required


def test_interval_dosing_carries_a_note_for_the_pharmacist() -> None:
    assert "check the spacing" in (parse_dosage("one every 8 hours").note or "")
    assert parse_dosage("one tablet twice a day").note is None


def test_labels() -> None:
    assert quantity_label(Decimal("0.5"), "tablet") == "½ tablet"
    assert quantity_label(Decimal("1.5"), "tablet") == "1½ tablets"
    assert quantity_label(Decimal("2"), "patch") == "2 patches"
    assert quantity_label(Decimal("30.0"), "ml") == "30 ml"
    assert quantity_label(Decimal("2.5"), "ml") == "2.5 ml"
    assert quantity_label(Decimal("1"), None) == "1"


ITEMS = [
    DoseItem("Amlodipine 5mg tablets", "one in the morning", "tablet", 1),
    DoseItem("Metformin 500mg tablets", "one tablet twice a day with food", "tablet", 2),
    DoseItem("Simvastatin 40mg tablets", "one at night", "tablet", 3),
    DoseItem("Lactulose solution", "15ml twice daily", "ml", 4),
    DoseItem("Paracetamol 500mg tablets", "two up to four times a day when required",
             "tablet", 5),
    DoseItem("Prednisolone 5mg tablets", "six daily for 5 days then stop", "tablet", 6),
]


def test_the_calendar_groups_medicines_by_day_and_slot() -> None:
    calendar = dose_calendar(ITEMS, START, 7)
    assert [d.day for d in calendar.days][0::6] == [START, date(2026, 12, 6)]
    assert calendar.end == date(2026, 12, 6)
    day = calendar.days[3]
    assert [(d.medicine.split()[0], d.label) for d in day.slots[M]] == [
        ("Amlodipine", "1 tablet"), ("Metformin", "1 tablet"), ("Lactulose", "15 ml")]
    assert [d.medicine.split()[0] for d in day.slots[N]] == []
    assert [d.medicine.split()[0] for d in day.slots[E]] == ["Metformin", "Lactulose"]
    assert [d.medicine.split()[0] for d in day.slots[B]] == ["Simvastatin"]
    assert [i.item_id for i in calendar.as_required] == [5]
    assert [(u.item.item_id, "course" in u.reason) for u in calendar.unparsed] == [(6, True)]
    with pytest.raises(ValueError):
        dose_calendar(ITEMS, START, 0)


def test_the_packing_list_counts_units_per_compartment_and_keeps_liquids_out() -> None:
    packing = packing_list(dose_calendar(ITEMS, START, 7))
    by_slot = {s.slot: s for s in packing.slots}
    assert [(line.item_id, line.label, line.compartments) for line in by_slot[M].lines] == [
        (1, "1 tablet", 7), (2, "1 tablet", 7)]
    assert by_slot[M].units_per_compartment == 2
    assert by_slot[N].lines == ()
    assert [(slot, line.item_id, line.label) for slot, line in packing.outside_pack] == [
        (M, 4, "15 ml"), (E, 4, "15 ml")]
    totals = {t.item_id: t.quantity for t in packing.totals}
    assert totals == {1: 7, 2: 14, 3: 7, 4: 210}
    assert [i.item_id for i in packing.as_required] == [5]
    assert [u.item.item_id for u in packing.unparsed] == [6]
    assert (packing.start, packing.end) == (START, date(2026, 12, 6))


def test_the_page_renders_a_table_of_days_and_slots(app: Flask) -> None:
    calendar = dose_calendar(ITEMS, START, 2)
    with app.test_request_context("/patient/dose-calendar"):
        html = render_template("patient/dose_calendar.html", calendar=calendar,
                               patient_name="Ann Example")
    assert "<style" not in html and "style=" not in html  # CSP: no inline styles
    assert 'href="/static/print.css"' in html
    assert html.count('<th scope="col">') == 5
    assert html.count('<th scope="row">') == 2
    assert "Monday 30 November 2026" in html and "Tue 1 Dec" in html
    assert "Metformin 500mg tablets</span>: <strong>1 tablet</strong>" in html
    assert "(not in the pack)" in html  # the lactulose
    assert "Only when you need them" in html and "Paracetamol" in html
    assert "your pharmacist will check" in html and "Prednisolone" in html


def test_calendar_for_patient_reads_current_repeat_items(db) -> None:  # type: ignore[no-untyped-def]
    patient = patient_with_account(uses_dose_pack=True)
    other = patient_with_account()
    repeat_prescription(db.session, patient, [
        {"name": "Amlodipine 5mg tablets", "dosage": "one daily"},
        {"name": "Simvastatin 40mg tablets", "dosage": "one at night"}],
        dispensed_on=date(2026, 11, 20))
    repeat_prescription(db.session, patient, [{"name": "Rejected", "dosage": "one daily"}],
                        dispensed_on=None, status=PrescriptionStatus.REJECTED)
    repeat_prescription(db.session, other, [{"name": "Not hers", "dosage": "one daily"}],
                        dispensed_on=date(2026, 11, 20))
    db.session.commit()

    calendar = calendar_for_patient(db.session, patient, START, 28)
    assert len(calendar.days) == 28
    assert sorted(s.item.medicine for s in calendar.scheduled) == [
        "Amlodipine 5mg tablets", "Simvastatin 40mg tablets"]
    assert [d.medicine for d in calendar.days[27].slots[B]] == ["Simvastatin 40mg tablets"]
    from pharmacy.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        calendar_for_patient(db.session, patient, START, 400)
