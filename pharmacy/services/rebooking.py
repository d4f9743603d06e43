"""Patients choosing another delivery slot after the planner could not fit their stop
("unserved") or the courier could not deliver (a failed attempt).

The order's place in its old slot is given back, a place in the new slot is booked under the
usual rules (capacity, fridge vans, cut-off), and the order is taken off its old wave so that
only the new slot's wave plans and delivers it. Stock stays as it is: the parcel is packed
and waits at the pharmacy.

How the old stop is taken off its wave:
- an unserved stop was never on a route and has no attempts: it is deleted (the audit event
  keeps its id, wave and reason), so no re-plan of the old wave can pick it up again and the
  order could even come back to that wave later;
- a failed stop keeps its attempt and stays ``failed`` (never planned again); the order goes
  from FAILED back to PACKED, so the new slot's wave gathers it at its cut-off like any
  other packed order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Conflict, InvalidRequest
from ..models import (
    AttemptOutcome,
    DeliveryAttempt,
    DeliverySlot,
    DeliveryStop,
    DeliveryWave,
    Order,
    OrderStatus,
    Pharmacy,
    PrescriptionItem,
    StopStatus,
    User,
    WaveStatus,
)
from ..models.base import utcnow
from . import audit, orders, slots
from .rx_rules.validity import LONDON, cd_last_day

logger = logging.getLogger(__name__)

CD_28_DAY_SCHEDULES = (2, 3, 4)  # Misuse of Drugs Regulations 2001 reg 16
FAILURE_WORDS = {
    "not_home": "Our courier called but nobody was at home.",
    "wrong_address": "Our courier could not find the address.",
    "refused": "The parcel was refused at the door.",
    "unsafe": "Our courier could not deliver safely.",
}
UNSERVED_WORDS = "We could not fit your delivery into the time you chose."
MISSED_WORDS = ("Your order was ready after the van for the time you chose had left; please "
                "choose another time.")


class NotRebookable(Conflict):
    code = "not_rebookable"


@dataclass(frozen=True)
class RebookReason:
    """Why the patient is asked to choose another slot."""

    kind: str           # "unserved" or "failed"
    message: str        # in plain words, for the patient
    stop: DeliveryStop | None


@dataclass(frozen=True)
class Rebooked:
    order: Order
    replayed: bool


def _latest_stop(session: Session, order: Order) -> DeliveryStop | None:
    return session.scalar(select(DeliveryStop).where(DeliveryStop.order_id == order.id)
                          .order_by(DeliveryStop.id.desc()).limit(1))


def rebook_reason(session: Session, order: Order) -> RebookReason | None:
    """Why this order needs a new slot, or None when it does not (or cannot have one)."""
    if order.recalled_at is not None:
        return None  # it comes back to the pharmacy and is refunded
    if order.status is OrderStatus.FAILED:
        stop = _latest_stop(session, order)
        attempt = None
        if stop is not None:
            attempt = session.scalar(select(DeliveryAttempt).where(
                DeliveryAttempt.stop_id == stop.id,
                DeliveryAttempt.outcome == AttemptOutcome.FAILED)
                .order_by(DeliveryAttempt.id.desc()).limit(1))
        words = FAILURE_WORDS.get(attempt.failure_reason or "", "") if attempt else ""
        return RebookReason("failed", words or "We could not deliver your order.", stop)
    if order.status is OrderStatus.PACKED:
        stop = _latest_stop(session, order)
        if stop is not None and stop.status is StopStatus.UNSERVED:
            # The planner's reason is technical (vans, windows); the patient gets plain words.
            return RebookReason("unserved", UNSERVED_WORDS, stop)
        if (stop is None or stop.status not in (StopStatus.PENDING, StopStatus.ARRIVED)) \
                and _missed_its_wave(session, order):
            return RebookReason("missed", MISSED_WORDS, None)
    return None


def _missed_its_wave(session: Session, order: Order) -> bool:
    """Packed after its slot's van left (the wave was dispatched without it) or after the
    slot ended: no plan will ever carry it unless it moves to another slot."""
    if order.delivery_window_start is None:
        return False
    if order.delivery_window_end is not None and order.delivery_window_end <= utcnow():
        return True
    wave = session.scalar(select(DeliveryWave).where(
        DeliveryWave.pharmacy_id == order.pharmacy_id,
        DeliveryWave.window_start == order.delivery_window_start))
    return wave is not None and wave.status in (WaveStatus.DISPATCHED, WaveStatus.COMPLETED)


def _cd_last_day(session: Session, order: Order) -> date | None:
    """The last day a Schedule 2-4 controlled drug on this order may still be supplied."""
    last: date | None = None
    for line in order.lines:
        if line.medicine.cd_schedule not in CD_28_DAY_SCHEDULES:
            continue
        item = (session.get(PrescriptionItem, line.prescription_item_id)
                if line.prescription_item_id else None)
        issued = item.prescription.issued_on if item is not None else None
        if issued is not None:
            day = cd_last_day(issued)
            last = day if last is None else min(last, day)
    return last


def bookable_slots(session: Session, order: Order, *,
                   now: datetime | None = None) -> list[slots.SlotView]:
    """The slots this order may move to: fridge vans for cold items, before a controlled
    drug's prescription runs out, never the slot it has now."""
    pharmacy = session.get(Pharmacy, order.pharmacy_id)
    if pharmacy is None:
        return []
    last_day = _cd_last_day(session, order)
    return [view for view in slots.available_slots(session, pharmacy,
                                                   needs_fridge=order.needs_fridge, now=now)
            if view.slot.id != order.delivery_slot_id
            and (last_day is None or view.slot.starts_at.astimezone(LONDON).date() <= last_day)]


def rebook_delivery(session: Session, order: Order, slot_id: int, *, actor: User | None,
                    now: datetime | None = None, request_id: str | None = None) -> Rebooked:
    """Move an unserved or failed delivery to another slot.

    The caller locks the order row (``get_patient_order(..., lock=True)``). Sending the same
    rebooking again changes nothing (``replayed``).

    Raises:
        NotRebookable (409): the order is not waiting for a new slot, or its old wave is
            being planned at this moment.
        SlotUnavailable (409): the slot is full, has no fridge place, or its cut-off passed.
        InvalidRequest (422): not a slot of the order's pharmacy, or after the last day a
            controlled drug on it may be supplied.
    """
    now = now or utcnow()
    reason = rebook_reason(session, order)
    if reason is None:
        if order.recalled_at is not None:
            raise NotRebookable("The pharmacy has recalled this parcel: it will not be "
                                "delivered, and it is refunded when it is back with us.",
                                current_status=order.status.value)
        if slot_id == order.delivery_slot_id and order.status in (
                OrderStatus.PACKED, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED):
            return Rebooked(order, True)  # already in that slot: a repeated request
        raise NotRebookable(
            f"An order that is {order.status.value.replace('_', ' ')} is not waiting for a "
            "new delivery slot.", current_status=order.status.value)
    if slot_id == order.delivery_slot_id:
        raise NotRebookable("That is the delivery slot that did not work out; choose another.")
    slot = session.get(DeliverySlot, slot_id)
    if slot is None or slot.pharmacy_id != order.pharmacy_id:
        raise InvalidRequest("Choose one of the delivery slots offered.",
                             errors=[{"field": "slot_id", "message": "Not a slot we offer."}])
    last_day = _cd_last_day(session, order)
    if last_day is not None and slot.starts_at.astimezone(LONDON).date() > last_day:
        raise InvalidRequest(
            f"This order holds a controlled drug whose prescription may be supplied only "
            f"until {last_day:%-d %B}; choose a slot by then.",
            errors=[{"field": "slot_id", "message": "After the prescription runs out."}])
    old_stop = reason.stop
    if reason.kind == "unserved" and old_stop is not None:
        # Lock the old wave as store_plan does: a plan being solved now still counts on
        # this stop, so the patient tries again in a moment rather than race it.
        wave = session.scalar(select(DeliveryWave).where(DeliveryWave.id == old_stop.wave_id)
                              .with_for_update())
        if wave is not None and wave.status is WaveStatus.PLANNING:
            raise NotRebookable("Your delivery is being re-planned right now; try again in a "
                                "minute.", retry=True)
    slots.book(session, slot.id, needs_fridge=order.needs_fridge, now=now)
    old_slot_id = order.delivery_slot_id
    if old_slot_id is not None:
        slots.release(session, old_slot_id, needs_fridge=order.needs_fridge)
    before = {"status": order.status.value, "slot": old_slot_id,
              "stop": old_stop.id if old_stop else None,
              "wave": old_stop.wave_id if old_stop else None,
              "reason": (old_stop.unserved_reason if reason.kind == "unserved" and old_stop
                         else reason.kind)}
    if reason.kind == "unserved" and old_stop is not None:
        session.delete(old_stop)
    order.delivery_slot_id = slot.id
    order.delivery_window_start, order.delivery_window_end = slot.starts_at, slot.ends_at
    if order.status is OrderStatus.FAILED:
        orders.advance(session, order, OrderStatus.PACKED, actor=actor, request_id=request_id,
                       reason="rebooked after a failed delivery")
    audit.record(session, action="order.delivery_rebooked", entity_type="order",
                 entity_id=order.id, actor=actor, request_id=request_id, before=before,
                 after={"status": order.status.value, "slot": slot.id})
    session.flush()
    logger.info("order %s rebooked from slot %s to slot %s", order.id, old_slot_id, slot.id)
    return Rebooked(order, False)
