"""A wave of demo deliveries: the demo pharmacy, its couriers and vans, and packed orders."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from pharmacy.models import (
    Address,
    DeliverySlot,
    Medicine,
    Order,
    OrderLine,
    OrderStatus,
    PatientProfile,
    Pharmacy,
)
from pharmacy.services import slots
from pharmacy.services.demo import DEMO_ODS_CODE, seed_demo

LONDON = ZoneInfo("Europe/London")


def make_wave_orders(db, count: int, *, fridge_every: int = 7, cd_every: int = 0) -> DeliverySlot:  # type: ignore[no-untyped-def]
    """``count`` packed orders for tomorrow's 12:00-14:00 slot (every 7th needs a fridge)."""
    seed_demo(db.session)
    pharmacy = db.session.scalar(select(Pharmacy).where(Pharmacy.ods_code == DEMO_ODS_CODE))
    tomorrow = datetime.now(LONDON).date() + timedelta(days=1)
    slot = next(s for s in slots.ensure_slots(db.session, pharmacy, tomorrow)
                if s.starts_at.astimezone(LONDON).time() == time(12))
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
