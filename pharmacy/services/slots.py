"""Delivery slots: 2-hour windows with capacity from the couriers and vans on shift.

Slots are laid out in the pharmacy's local time and stored in UTC. Booking is a conditional
UPDATE (``booked < capacity``), correct on PostgreSQL and SQLite alike and under any
concurrency: the database, not a read-then-write in Python, decides who gets the last place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..errors import Conflict, NotFound
from ..models import Courier, DeliverySlot, Pharmacy, User, Vehicle
from ..models.base import utcnow

# Window starts in local time; each window is two hours.
WINDOW_STARTS = (time(10), time(12), time(14), time(16), time(18))
WINDOW = timedelta(hours=2)
CUTOFF_BEFORE_START = timedelta(hours=2)  # packing and route planning need this long
STOPS_PER_VAN_PER_WINDOW = 12             # a courier's realistic drops in two city hours


class SlotUnavailable(Conflict):
    code = "slot_unavailable"


@dataclass(frozen=True)
class SlotView:
    slot: DeliverySlot
    remaining: int
    fridge_remaining: int


def _capacity(session: Session, pharmacy: Pharmacy, start_local: datetime,
              end_local: datetime) -> tuple[int, int]:
    """Places in a window: one van per courier whose shift covers it, capped by van size."""
    couriers = session.execute(
        select(Courier, Vehicle).join(User, User.id == Courier.user_id)
        .join(Vehicle, Vehicle.id == Courier.default_vehicle_id)
        .where(Courier.pharmacy_id == pharmacy.id, User.is_active.is_(True),
               Vehicle.is_active.is_(True))
    ).all()
    total = fridge = 0
    for courier, van in couriers:
        if courier.shift_start <= start_local.time() and end_local.time() <= courier.shift_end:
            places = min(van.capacity_parcels, STOPS_PER_VAN_PER_WINDOW)
            total += places
            if van.has_fridge:
                fridge += places
    return total, fridge


def ensure_slots(session: Session, pharmacy: Pharmacy, day: date) -> list[DeliverySlot]:
    """Create the day's slots if missing (idempotent); return them in time order."""
    tz = ZoneInfo(pharmacy.timezone)
    existing = {s.starts_at: s for s in session.scalars(
        select(DeliverySlot).where(DeliverySlot.pharmacy_id == pharmacy.id))}
    slots = []
    for start in WINDOW_STARTS:
        start_local = datetime.combine(day, start, tzinfo=tz)
        end_local = start_local + WINDOW
        starts_at = start_local.astimezone(ZoneInfo("UTC"))
        slot = existing.get(starts_at)
        if slot is None:
            capacity, fridge = _capacity(session, pharmacy, start_local, end_local)
            slot = DeliverySlot(pharmacy_id=pharmacy.id, starts_at=starts_at,
                                ends_at=end_local.astimezone(ZoneInfo("UTC")),
                                cutoff_at=starts_at - CUTOFF_BEFORE_START,
                                capacity=capacity, fridge_capacity=fridge)
            session.add(slot)
        slots.append(slot)
    session.flush()
    return slots


def available_slots(session: Session, pharmacy: Pharmacy, *, needs_fridge: bool,
                    now: datetime | None = None, days: int = 3) -> list[SlotView]:
    """Bookable slots from now (same day where the cut-off allows) for ``days`` days."""
    now = now or utcnow()
    today = now.astimezone(ZoneInfo(pharmacy.timezone)).date()
    out = []
    for offset in range(days):
        for slot in ensure_slots(session, pharmacy, today + timedelta(days=offset)):
            remaining = slot.capacity - slot.booked
            fridge_remaining = slot.fridge_capacity - slot.booked_fridge
            if slot.cutoff_at <= now or remaining <= 0:
                continue
            if needs_fridge and fridge_remaining <= 0:
                continue
            out.append(SlotView(slot, remaining, fridge_remaining))
    return out


def get_slot(session: Session, slot_id: int) -> DeliverySlot:
    slot = session.get(DeliverySlot, slot_id)
    if slot is None:
        raise NotFound(f"No delivery slot {slot_id}.")
    return slot


def book(session: Session, slot_id: int, *, needs_fridge: bool,
         now: datetime | None = None) -> DeliverySlot:
    """Take one place in a slot (and a fridge place if needed), or raise SlotUnavailable."""
    now = now or utcnow()
    conditions = [DeliverySlot.id == slot_id, DeliverySlot.booked < DeliverySlot.capacity,
                  DeliverySlot.cutoff_at > now]
    values = {"booked": DeliverySlot.booked + 1}
    if needs_fridge:
        conditions.append(DeliverySlot.booked_fridge < DeliverySlot.fridge_capacity)
        values["booked_fridge"] = DeliverySlot.booked_fridge + 1
    booked = session.scalars(
        update(DeliverySlot).where(*conditions).values(**values).returning(DeliverySlot),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).one_or_none()
    if booked is not None:
        return booked
    slot = session.get(DeliverySlot, slot_id, populate_existing=True)
    if slot is None:
        raise NotFound(f"No delivery slot {slot_id}.")
    why = ("its cut-off has passed" if slot.cutoff_at <= now else
           "no fridge van has room" if needs_fridge else "it is full")
    raise SlotUnavailable(f"That delivery slot cannot be booked: {why}. Pick another.")


def release(session: Session, slot_id: int, *, needs_fridge: bool) -> None:
    """Give a place back (order cancelled before its delivery)."""
    values = {"booked": DeliverySlot.booked - 1}
    if needs_fridge:
        values["booked_fridge"] = DeliverySlot.booked_fridge - 1
    session.execute(update(DeliverySlot).where(DeliverySlot.id == slot_id,
                                               DeliverySlot.booked > 0)
                    .values(**values).execution_options(synchronize_session=False))
