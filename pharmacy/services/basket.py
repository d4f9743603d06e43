"""The patient's basket (kept in their session as plain ids) and what each entry shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import (
    Medicine,
    PatientProfile,
    Prescription,
    PrescriptionItem,
    PrescriptionStatus,
)
from . import orders, prescriptions


@dataclass(frozen=True)
class MedicineRow:
    """One item on "My medicines": can it go in the basket, or be requested, or when."""

    item: PrescriptionItem
    orderable_now: bool          # the current issue is ready to order
    repeat: prescriptions.RepeatStatus | None
    on_order: bool               # on an order, not yet supplied
    owed: int = 0                # units owed after a short supply, orderable now
    one_off: bool = False        # on a one-off (acute) prescription: no repeats
    needs_call: bool = False     # could be ordered, but not here: a pharmacist sets it up


def _needs_call(item: PrescriptionItem, patient: PatientProfile) -> bool:
    """An item the checkout cannot take as it stands (its medicine is not one we list, or
    its quantity is not whole units): the patient calls, and a pharmacist sets it up."""
    return item.medicine_id is None or orders.prescription_line(
        item, patient, orders.Pricing())[0] <= 0


def my_medicines(session: Session, patient: PatientProfile, today: date) -> list[MedicineRow]:
    """The items of one-off prescriptions still to be had, then each repeat item: in the
    basket if its issue may be ordered, else when it next can.

    An item already supplied on its issue is judged by its next repeat alone, even while
    its order is on the way or the issue's other items wait to be ordered.
    """
    seen: dict[int, str | None] = {}  # lapse, once per prescription of the page
    rows = one_off_items(session, patient, seen)
    for status in prescriptions.my_medicines(session, patient, today):
        item, rx = status.item, status.item.prescription
        supplied = prescriptions.item_supplied_at(item) is not None
        owing = orders.owes(item) and rx.status in (
            *orders.ORDERABLE_RX, PrescriptionStatus.DISPENSED) and (
            not prescriptions.lapsed_once(session, rx, seen))
        on_order = orders.on_active_order(session, item.id, owing=True) if owing else (
            not supplied and orders.on_active_order(session, item.id))
        could = (((rx.status in orders.ORDERABLE_RX and not supplied) or owing)
                 and not on_order and not prescriptions.lapsed_once(session, rx, seen))
        call = could and _needs_call(item, patient)
        ready = could and not call
        rows.append(MedicineRow(item, ready, None if could else status, on_order,
                                item.quantity_owed if ready and owing else 0, needs_call=call))
    return rows


def one_off_items(session: Session, patient: PatientProfile,
                  seen: dict[int, str | None] | None = None) -> list[MedicineRow]:
    """Items of one-off (acute) prescriptions that the patient can still have: not yet
    supplied on an orderable prescription, or owed after a short supply; newest first.
    Supplied, withdrawn or lapsed ones are not listed (lapsed is judged here, not left to
    the nightly expiry, which does not look at prescriptions still awaiting a check)."""
    items = session.scalars(
        select(PrescriptionItem).join(Prescription).where(
            Prescription.patient_id == patient.id, Prescription.prescription_type != "repeat",
            Prescription.status.in_([*orders.ORDERABLE_RX, PrescriptionStatus.DISPENSED]))
        .order_by(Prescription.received_at.desc(), PrescriptionItem.id)).all()
    rows = []
    seen = {} if seen is None else seen
    for item in items:
        owing = orders.owes(item)
        if not owing and (prescriptions.item_supplied_at(item) is not None
                          or item.prescription.status is PrescriptionStatus.DISPENSED):
            continue
        if prescriptions.lapsed_once(session, item.prescription, seen):
            continue
        on_order = orders.on_active_order(session, item.id, owing=owing)
        call = not on_order and _needs_call(item, patient)
        ready = not on_order and not call
        rows.append(MedicineRow(item, ready, None, on_order,
                                item.quantity_owed if ready and owing else 0, one_off=True,
                                needs_call=call))
    return rows


def otc_products(session: Session) -> list[Medicine]:
    return list(session.scalars(select(Medicine).where(Medicine.is_active.is_(True),
                                                       Medicine.prescription_only.is_(False))
                                .order_by(Medicine.name)))


@dataclass(frozen=True)
class BasketLine:
    key: str
    name: str
    quantity: int
    price_minor: int
    is_prescription: bool
    cold_chain: bool
    request: orders.LineRequest


def basket_lines(session: Session, patient: PatientProfile, basket: Mapping[str, Any],
                 pricing: orders.Pricing) -> list[BasketLine]:
    """Resolve the session's basket; entries that no longer apply are dropped."""
    lines = []
    for key, quantity in basket.items():
        kind, _, raw_id = key.partition(":")
        if not raw_id.isdigit():
            continue
        if kind == "rx":
            item = session.get(PrescriptionItem, int(raw_id))
            if item is None or item.prescription.patient_id != patient.id:
                continue
            _, charge = orders.prescription_line(item, patient, pricing)
            lines.append(BasketLine(key, item.medication_display, 1, charge, True,
                                    bool(item.medicine and item.medicine.cold_chain),
                                    orders.LineRequest(prescription_item_id=item.id)))
        elif kind == "otc":
            medicine = session.get(Medicine, int(raw_id))
            if medicine is None or medicine.prescription_only:
                continue
            packs = max(1, min(int(quantity), orders.MAX_OTC_PACKS))
            lines.append(BasketLine(key, medicine.name, packs, medicine.unit_price_minor * packs,
                                    False, medicine.cold_chain,
                                    orders.LineRequest(medicine_id=medicine.id, quantity=packs)))
    return lines


# The standard questions before selling a pharmacy medicine (the "WWHAM" questions of UK
# community pharmacy: Who is it for, What are the symptoms, How long, Action taken,
# Medicines taken), asked as yes/no so that the answers can be checked.
SAFETY_QUESTIONS = (
    ("for_self_adult", "Is it for you, and are you 16 or older?", "yes"),
    ("symptoms_over_a_week", "Have the symptoms lasted more than a week?", "no"),
    ("other_medicines", "Do you take any other medicines, including ones bought in a shop?",
     "no"),
    ("pregnant", "Are you pregnant or breastfeeding?", "no"),
    ("conditions", "Do you have a long-term condition (for example of the liver, kidneys, "
                   "heart or asthma)?", "no"),
    ("tried_before", "Have you tried something for this already without success?", "no"),
)


def safety_check(answers: Mapping[str, str]) -> list[str]:
    """The questions whose answer means a pharmacist should advise before the sale.

    An unanswered question counts as such an answer: nothing is sold on a guess.
    """
    return [question for key, question, safe in SAFETY_QUESTIONS
            if (answers.get(key) or "").strip().lower() != safe]
