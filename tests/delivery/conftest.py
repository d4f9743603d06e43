"""A wave of demo deliveries: the demo pharmacy, its couriers and vans, and packed orders."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from pharmacy.models import (
    Address,
    DeliverySlot,
    DeliveryStop,
    Medicine,
    Order,
    OrderLine,
    OrderStatus,
    PatientProfile,
    Pharmacy,
    StopStatus,
    User,
    WaveStatus,
)
from pharmacy.services import delivery, slots
from pharmacy.services.demo import DEMO_ODS_CODE, seed_demo

LONDON = ZoneInfo("Europe/London")


def make_wave_orders(db, count: int, *, fridge_every: int = 7, cd_every: int = 0,  # type: ignore[no-untyped-def]
                     day: date | None = None, hour: int = 12) -> DeliverySlot:
    """``count`` packed orders for the 12:00-14:00 slot (or ``hour``'s) of ``day`` (default
    tomorrow); every 7th needs a fridge."""
    seed_demo(db.session)
    pharmacy = db.session.scalar(select(Pharmacy).where(Pharmacy.ods_code == DEMO_ODS_CODE))
    day = day or datetime.now(LONDON).date() + timedelta(days=1)
    slot = next(s for s in slots.ensure_slots(db.session, pharmacy, day)
                if s.starts_at.astimezone(LONDON).time() == time(hour))
    plain = db.session.scalar(select(Medicine).where(Medicine.prescription_only.is_(False),
                                                     Medicine.cold_chain.is_(False)))
    cold = db.session.scalar(select(Medicine).where(Medicine.cold_chain.is_(True)))
    controlled = db.session.scalar(select(Medicine).where(Medicine.cd_schedule == 2))
    patients = db.session.scalars(select(PatientProfile).order_by(PatientProfile.id)
                                  .limit(count)).all()
    for n, patient in enumerate(patients):
        address = db.session.scalar(select(Address).where(Address.patient_id == patient.id))
        medicine = plain
        if fridge_every and n % fridge_every == 0:
            medicine = cold
        elif cd_every and n % cd_every == 1:
            medicine = controlled
        order = Order(reference=f"W{n:05d}", patient_id=patient.id, pharmacy_id=pharmacy.id,
                      address_id=address.id, status=OrderStatus.PACKED,
                      delivery_slot_id=slot.id, delivery_window_start=slot.starts_at,
                      delivery_window_end=slot.ends_at, placed_at=datetime.now(UTC),
                      needs_fridge=medicine.cold_chain, parcel_count=1)
        order.lines.append(OrderLine(medicine_id=medicine.id, quantity=1, unit_price_minor=0,
                                     line_total_minor=0, status="packed", quantity_supplied=1))
        db.session.add(order)
    db.session.commit()
    return slot


PATIENT_PASSWORD = "demo-patient-1"


def slot_at(db, slot: DeliverySlot, hour: int, days: int = 0) -> DeliverySlot:  # type: ignore[no-untyped-def]
    pharmacy = db.session.get(Pharmacy, slot.pharmacy_id)
    day = slot.starts_at.astimezone(LONDON).date() + timedelta(days=days)
    return next(s for s in slots.ensure_slots(db.session, pharmacy, day)
                if s.starts_at.astimezone(LONDON).time() == time(hour))


def make_unserved(db, slot: DeliverySlot, order: Order) -> DeliveryStop:  # type: ignore[no-untyped-def]
    """Close the slot's wave and record this order's stop as one the planner could not fit."""
    wave = delivery.close_wave(db.session, slot)
    stop = db.session.scalar(select(DeliveryStop).where(DeliveryStop.order_id == order.id))
    stop.status, stop.unserved_reason = StopStatus.UNSERVED, "no vehicle can reach it in time"
    wave.status = WaveStatus.PLANNED
    db.session.commit()
    return stop


def wave_orders(db, *, fridge: bool = False) -> list[Order]:  # type: ignore[no-untyped-def]
    """The packed orders of make_wave_orders (the demo's own orders are long delivered)."""
    return list(db.session.scalars(select(Order).where(
        Order.status == OrderStatus.PACKED, Order.needs_fridge.is_(fridge))
        .order_by(Order.id)))


def first_order(db) -> Order:  # type: ignore[no-untyped-def]
    return wave_orders(db)[0]


def patient_email(db, order: Order) -> str:  # type: ignore[no-untyped-def]
    patient = db.session.get(PatientProfile, order.patient_id)
    return db.session.get(User, patient.user_id).email
