"""Refill synchronisation: bring every repeat item onto one monthly delivery date.

Each item runs out on its own day. A one-off short supply per item moves its run-out onto
a sync date (the patient's chosen day of the month); from then on every item is supplied
together, monthly. Quantities are rounded up, so a patient is never left without medicine;
rounding never adds a whole unit more than needed.

``synchronise`` is pure; ``sync_plan_for_patient`` reads the patient's repeat items.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from ..models import PatientProfile, PrescriptionItem
from .dose_calendar import parse_dosage

DEFAULT_SUPPLY_DAYS = 28  # as prescriptions.repeat_status assumes when none is given
MAX_SYNC_DAY = 28         # every month has the day, so "monthly" never needs clamping


@dataclass(frozen=True)
class HeldItem:
    """A medicine the patient holds: when its current supply started, for how long, how fast.

    The supply covers ``supply_duration_days`` days from ``last_supply_date``, so the
    patient runs out at the start of ``runs_out_on``.
    """

    item_id: int
    last_supply_date: date
    supply_duration_days: int
    daily_quantity: Decimal    # units a day, in the dispensing unit

    def __post_init__(self) -> None:
        if self.supply_duration_days <= 0:
            raise ValueError(f"item {self.item_id}: supply duration must be positive")
        if not self.daily_quantity > 0:
            raise ValueError(f"item {self.item_id}: daily quantity must be positive")

    @property
    def runs_out_on(self) -> date:
        """The first day without medicine."""
        return self.last_supply_date + timedelta(days=self.supply_duration_days)


@dataclass(frozen=True)
class SyncPlan:
    """The one-off supply that moves one item onto the common monthly date.

    Attributes:
        runs_out_on: the first day without medicine as things stand.
        short_supply_days: days the one-off supply covers, from ``runs_out_on``.
        short_supply_quantity: units to supply once (0: already in line).
        deliver_by: the last day the short supply can arrive without a gap (the last day
            the patient still has medicine); None when nothing needs delivering.
        ships_with: a sync delivery that can carry the short supply, when one falls before
            the run-out (otherwise it goes with the item's usual order before ``deliver_by``).
        synced_on: the sync date on which the item then runs out; from this date it is
            supplied monthly with every other item.
    """

    item_id: int
    runs_out_on: date
    short_supply_days: int
    short_supply_quantity: int
    deliver_by: date | None
    ships_with: date | None
    synced_on: date


def add_months(day: date, months: int) -> date:
    """The same day of the month ``months`` later (days 1-28 only)."""
    if day.day > MAX_SYNC_DAY:
        raise ValueError(f"a sync day must be between 1 and {MAX_SYNC_DAY}, got {day.day}")
    index = day.year * 12 + day.month - 1 + months
    return day.replace(year=index // 12, month=index % 12 + 1)


def next_sync_date(day_of_month: int, today: date) -> date:
    """The first date on or after ``today`` that falls on ``day_of_month``."""
    if not 1 <= day_of_month <= MAX_SYNC_DAY:
        raise ValueError(f"a sync day must be between 1 and {MAX_SYNC_DAY}, got {day_of_month}")
    candidate = today.replace(day=day_of_month)
    return candidate if candidate >= today else add_months(candidate, 1)


def _first_sync_on_or_after(sync_day: date, day: date) -> date:
    if day <= sync_day:
        return sync_day
    months = (day.year - sync_day.year) * 12 + day.month - sync_day.month
    candidate = add_months(sync_day, months)
    return candidate if candidate >= day else add_months(candidate, 1)


def synchronise(items: Sequence[HeldItem], sync_day: date, *,
                today: date | None = None) -> list[SyncPlan]:
    """One-off short supplies that make every item run out on a sync date.

    ``sync_day`` is the first common delivery date; sync dates are it and the same day of
    every later month. An item that runs out on or before ``sync_day`` is topped up to
    ``sync_day``; one that still has medicine then is topped up to the first sync date on
    or after its run-out (its short supply can ride on the sync delivery before that).

    Args:
        today: when given, an item that already ran out is treated as running out today
            (missed days are not supplied retrospectively).

    Raises:
        ValueError: ``sync_day`` is after the 28th of its month.
    """
    add_months(sync_day, 0)  # validates the day of the month
    plans = []
    for item in items:
        runs_out = item.runs_out_on
        if today is not None and runs_out < today:
            runs_out = today
        synced_on = _first_sync_on_or_after(sync_day, runs_out)
        days = (synced_on - runs_out).days
        # Round up: a part unit still has to be supplied whole.
        quantity = math.ceil(days * item.daily_quantity)
        previous_sync = add_months(synced_on, -1)
        ships_with = (previous_sync if quantity and previous_sync >= sync_day
                      and (today is None or previous_sync >= today) else None)
        deliver_by = max(runs_out - timedelta(days=1), today or date.min) if quantity else None
        plans.append(SyncPlan(item.item_id, runs_out, days, quantity, deliver_by, ships_with,
                              synced_on))
    return plans


# --- from the database -----------------------------------------------------------------------

@dataclass(frozen=True)
class Skipped:
    item_id: int
    medicine: str
    reason: str


@dataclass(frozen=True)
class SyncProposal:
    """Plans for the items that can be synchronised, and why the others cannot."""

    sync_day: date
    plans: list[SyncPlan]
    held: list[HeldItem]
    skipped: list[Skipped]


def daily_quantity(item: PrescriptionItem) -> Decimal | None:
    """Units a day: from the dosage instruction when it is a regular schedule, else the
    prescribed quantity over the supply duration; None when neither is known."""
    parsed = parse_dosage(item.dosage_text, default_unit=item.quantity_unit)
    if parsed.doses:
        return parsed.daily_quantity
    if item.quantity and item.supply_duration_days:
        return Decimal(item.quantity) / Decimal(item.supply_duration_days)
    return None


def sync_plan_for_patient(session: Session, patient: PatientProfile, sync_day: date, *,
                          today: date) -> SyncProposal:
    """Short supplies that bring the patient's repeat items onto ``sync_day`` and monthly.

    Only items whose latest issue was dispensed and that have repeats left can be planned;
    the others are listed with the reason.
    """
    from .prescriptions import LONDON, item_supplied_at, my_medicines

    held: list[HeldItem] = []
    skipped: list[Skipped] = []
    for status in my_medicines(session, patient, today):
        item = status.item

        def skip(reason: str, item: PrescriptionItem = item) -> None:
            skipped.append(Skipped(item.id, item.medication_display, reason))

        supplied = item_supplied_at(item)  # items of one issue are supplied one by one
        if item.status != "active":
            skip("This item is no longer active.")
        elif supplied is None:
            skip("The current issue of this item has not been supplied yet.")
        elif status.remaining == 0 or item.cd_schedule in (2, 3):
            skip(status.reason)  # no further issue to align
        elif (daily := daily_quantity(item)) is None:
            skip("How much is taken a day is not known.")
        else:
            held.append(HeldItem(item.id, supplied.astimezone(LONDON).date(),
                                 item.supply_duration_days or DEFAULT_SUPPLY_DAYS, daily))
    return SyncProposal(sync_day, synchronise(held, sync_day, today=today), held, skipped)
