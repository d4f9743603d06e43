"""Refill synchronisation: known answers, properties (hypothesis), the patient's items."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pharmacy.services.refill_sync import (
    HeldItem,
    SyncPlan,
    add_months,
    next_sync_date,
    sync_plan_for_patient,
    synchronise,
)

from .rx_data import patient_with_account, repeat_prescription

SYNC = date(2026, 12, 15)


def _held(item_id: int, runs_out: date, daily: str, duration: int = 28) -> HeldItem:
    return HeldItem(item_id, runs_out - timedelta(days=duration), duration, Decimal(daily))


def test_known_answers() -> None:
    plans = synchronise([
        _held(1, date(2026, 12, 10), "1"),     # runs out before the sync day: bridge to it
        _held(2, date(2026, 12, 20), "2"),     # still has some then: top up to next month's
        _held(3, date(2026, 12, 15), "3"),     # already in line
        _held(4, date(2026, 12, 12), "0.5"),   # 1.5 tablets: round up to 2
    ], SYNC)
    assert plans == [
        SyncPlan(1, date(2026, 12, 10), 5, 5, date(2026, 12, 9), None, SYNC),
        SyncPlan(2, date(2026, 12, 20), 26, 52, date(2026, 12, 19), SYNC, date(2027, 1, 15)),
        SyncPlan(3, SYNC, 0, 0, None, None, SYNC),
        SyncPlan(4, date(2026, 12, 12), 3, 2, date(2026, 12, 11), None, SYNC),
    ]


def test_an_item_already_run_out_restarts_today() -> None:
    today = date(2026, 12, 1)
    [plan] = synchronise([_held(1, date(2026, 11, 20), "2")], SYNC, today=today)
    assert (plan.runs_out_on, plan.short_supply_days, plan.short_supply_quantity,
            plan.deliver_by) == (today, 14, 28, today)


def test_months_and_sync_days() -> None:
    assert add_months(date(2026, 11, 28), 3) == date(2027, 2, 28)
    assert add_months(date(2027, 1, 5), -1) == date(2026, 12, 5)
    assert next_sync_date(15, date(2026, 11, 26)) == date(2026, 12, 15)
    assert next_sync_date(26, date(2026, 11, 26)) == date(2026, 11, 26)
    assert next_sync_date(1, date(2026, 12, 2)) == date(2027, 1, 1)
    with pytest.raises(ValueError):
        next_sync_date(29, date(2026, 11, 26))
    with pytest.raises(ValueError):
        synchronise([], date(2026, 12, 30))
    with pytest.raises(ValueError):
        HeldItem(1, SYNC, 0, Decimal(1))
    with pytest.raises(ValueError):
        HeldItem(1, SYNC, 28, Decimal(0))


dailies = st.one_of(
    st.sampled_from(["0.5", "1", "1.5", "2", "3", "4", "7.5", "10", "30"]).map(Decimal),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100"), places=2)
    .filter(lambda d: d > 0),
)
held_items = st.builds(
    HeldItem,
    item_id=st.integers(1, 10_000),
    last_supply_date=st.dates(date(2026, 1, 1), date(2027, 6, 30)),
    supply_duration_days=st.integers(1, 120),
    daily_quantity=dailies,
)
sync_days = st.dates(date(2026, 3, 1), date(2027, 9, 28)).filter(lambda d: d.day <= 28)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(held_items, max_size=8), sync_day=sync_days,
       today=st.one_of(st.none(), st.dates(date(2026, 1, 1), date(2027, 9, 1))))
def test_every_item_lands_on_a_sync_date_with_no_gap(items: list[HeldItem], sync_day: date,
                                                     today: date | None) -> None:
    plans = synchronise(items, sync_day, today=today)
    assert [p.item_id for p in plans] == [i.item_id for i in items]
    for item, plan in zip(items, plans, strict=True):
        runs_out = max(item.runs_out_on, today) if today else item.runs_out_on
        assert plan.runs_out_on == runs_out
        # Non-negative whole units.
        assert isinstance(plan.short_supply_quantity, int) and plan.short_supply_quantity >= 0
        assert plan.short_supply_days == (plan.synced_on - runs_out).days >= 0
        # Lands on a sync date: the sync day or the same day of a later month...
        assert plan.synced_on >= sync_day and plan.synced_on.day == sync_day.day
        assert plan.synced_on >= runs_out
        # ...the first one possible (a short supply is less than a month unless the sync
        # day itself is further away).
        assert plan.synced_on == sync_day or add_months(plan.synced_on, -1) < runs_out
        # No gap: the units cover every day up to the sync date; and not a whole unit more.
        needed = plan.short_supply_days * item.daily_quantity
        assert plan.short_supply_quantity >= needed
        assert plan.short_supply_quantity - 1 < needed or plan.short_supply_quantity == 0
        # It arrives while the patient still has medicine (or today, if already out).
        if plan.short_supply_quantity:
            assert plan.deliver_by is not None
            assert plan.deliver_by < runs_out or plan.deliver_by == today
        else:
            assert plan.deliver_by is None and plan.ships_with is None
        if plan.ships_with is not None:
            assert sync_day <= plan.ships_with < runs_out
            assert plan.ships_with.day == sync_day.day


def test_the_patients_dispensed_repeat_items_are_planned(db) -> None:  # type: ignore[no-untyped-def]
    patient = patient_with_account(sync_day=15)
    # Dispensed 20 Nov, 28 days: runs out 18 Dec. Dosage gives 2 a day.
    repeat_prescription(db.session, patient, [
        {"name": "Metformin 500mg tablets", "dosage": "one tablet twice a day", "quantity": 56}],
        dispensed_on=date(2026, 11, 20))
    # Dispensed 10 Nov, no readable dosage: 28 ml over 28 days, 1 ml a day; runs out 8 Dec.
    repeat_prescription(db.session, patient, [
        {"name": "Oral solution", "dosage": "use as directed", "quantity": 28, "unit": "ml"}],
        dispensed_on=date(2026, 11, 10))
    repeat_prescription(db.session, patient, [{"name": "Waiting", "dosage": "one daily"}],
                        dispensed_on=None)
    repeat_prescription(db.session, patient, [{"name": "Last one", "dosage": "one daily"}],
                        dispensed_on=date(2026, 11, 20), repeats_allowed=0)
    db.session.commit()

    proposal = sync_plan_for_patient(db.session, patient, SYNC, today=date(2026, 11, 26))
    by_days = {p.runs_out_on: p for p in proposal.plans}
    metformin = by_days[date(2026, 12, 18)]
    assert (metformin.synced_on, metformin.short_supply_quantity) == (date(2027, 1, 15), 56)
    solution = by_days[date(2026, 12, 8)]
    assert (solution.synced_on, solution.short_supply_quantity) == (SYNC, 7)
    assert sorted(s.medicine for s in proposal.skipped) == ["Last one", "Waiting"]
    assert {h.daily_quantity for h in proposal.held} == {Decimal(2), Decimal(1)}
