"""Orders: placing them (idempotently), reserving stock first-expiry-first-out, and moving
them through their life with every transition checked and audited.

Stock is never oversold: the batches an order needs are locked (``SELECT ... FOR UPDATE`` in
ascending id order, so two checkouts cannot deadlock) before their free quantity is read,
and the ``CHECK`` constraints on the batch are the backstop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import Conflict, DomainError, Forbidden, InvalidRequest, NotFound
from ..models import (
    Address,
    AllocationStatus,
    BatchStatus,
    LostDemand,
    Medicine,
    MovementKind,
    Order,
    OrderLine,
    OrderStatus,
    PatientProfile,
    PrescriptionItem,
    PrescriptionStatus,
    Role,
    StockAllocation,
    StockBatch,
    StockMovement,
    User,
)
from ..models.base import utcnow
from . import audit, slots

logger = logging.getLogger(__name__)
O = OrderStatus  # noqa: E741 (short alias for the transition table)

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    O.PLACED: frozenset({O.AWAITING_VERIFICATION, O.READY_TO_PICK, O.CANCELLED}),
    O.AWAITING_VERIFICATION: frozenset({O.READY_TO_PICK, O.CANCELLED}),
    O.READY_TO_PICK: frozenset({O.PACKED, O.CANCELLED}),
    O.PACKED: frozenset({O.OUT_FOR_DELIVERY, O.CANCELLED}),
    O.OUT_FOR_DELIVERY: frozenset({O.DELIVERED, O.FAILED}),
    # Back to PACKED when the patient picks another slot (services/rebooking.py).
    O.FAILED: frozenset({O.OUT_FOR_DELIVERY, O.PACKED, O.RETURNED}),
    O.RETURNED: frozenset({O.REFUNDED}),
    O.DELIVERED: frozenset(),
    O.REFUNDED: frozenset(),
    O.CANCELLED: frozenset(),
}
# Prescription issues that may still be ordered (the pharmacist may verify after ordering).
ORDERABLE_RX = (PrescriptionStatus.AWAITING_VERIFICATION, PrescriptionStatus.AWAITING_SECOND_CHECK,
                PrescriptionStatus.VERIFIED)
ACTIVE_ORDER = (O.PLACED, O.AWAITING_VERIFICATION, O.READY_TO_PICK, O.PACKED,
                O.OUT_FOR_DELIVERY, O.FAILED)
# A prescription item on one of these orders is being or has been supplied: it cannot be
# ordered again (a returned, refunded or cancelled order gives it back).
HOLDS_ITEM = (*ACTIVE_ORDER, O.DELIVERED)
# Orders whose units are not yet picked.
PRE_PACK = (O.PLACED, O.AWAITING_VERIFICATION, O.READY_TO_PICK)
# Orders whose packed units count as supplied to the patient.
SUPPLIED_BY = (O.PACKED, O.OUT_FOR_DELIVERY, O.FAILED, O.DELIVERED)
# A parcel past the pharmacy's door (with a courier, or back after a failed attempt): it can
# no longer be cancelled, only recalled.
RECALLABLE = (O.OUT_FOR_DELIVERY, O.FAILED)
# What a recalled parcel may never do again.
TOWARDS_PATIENT = frozenset({O.PACKED, O.OUT_FOR_DELIVERY, O.DELIVERED})
MAX_OTC_PACKS = 2           # per product per order: a sales limit for pharmacy products
MAX_LINES = 30
LONDON = ZoneInfo("Europe/London")


class OutOfStock(Conflict):
    code = "out_of_stock"

    def __init__(self, detail: str, *, pharmacy_id: int | None = None,
                 shortages: Sequence[Shortage] = (), **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.pharmacy_id = pharmacy_id
        self.shortages = list(shortages)


@dataclass(frozen=True)
class Shortage:
    """One medicine a checkout wanted more of than the shelves held (kept as lost demand;
    what was available is not told to the patient)."""

    medicine_id: int
    requested: int
    available: int


class IdempotencyMismatch(InvalidRequest):
    code = "idempotency_key_reused"


class InvalidOrderTransition(DomainError):
    status, code, title = 409, "invalid_transition", "Conflict"


@dataclass(frozen=True)
class Pricing:
    """The pricing rule: NHS prescription charge per item unless exempt; delivery fee."""

    prescription_charge_minor: int = 990
    delivery_fee_minor: int = 0
    currency: str = "GBP"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Pricing:
        return cls(prescription_charge_minor=int(config["PRESCRIPTION_CHARGE_MINOR"]),
                   delivery_fee_minor=int(config["DELIVERY_FEE_MINOR"]),
                   currency=str(config["CURRENCY"]))


@dataclass(frozen=True)
class LineRequest:
    prescription_item_id: int | None = None
    medicine_id: int | None = None
    quantity: int = 1            # packs, for over-the-counter products


@dataclass(frozen=True)
class OrderRequest:
    lines: Sequence[LineRequest]
    address_id: int
    slot_id: int

    def fingerprint(self) -> str:
        canonical = json.dumps({
            "lines": sorted([ln.prescription_item_id or 0, ln.medicine_id or 0, ln.quantity]
                            for ln in self.lines),
            "address_id": self.address_id, "slot_id": self.slot_id}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Placed:
    order: Order
    replayed: bool
    problems: list[str] = field(default_factory=list)


def _transition(session: Session, order: Order, new: OrderStatus, *, actor: User | None,
                reason: str | None = None, request_id: str | None = None,
                before_recall: bool = False) -> None:
    old = order.status
    if new not in TRANSITIONS[old]:
        raise InvalidOrderTransition(
            f"An order that is {old.value.replace('_', ' ')} cannot become "
            f"{new.value.replace('_', ' ')}.", current_status=old.value)
    if order.recalled_at is not None and new in TOWARDS_PATIENT and not (
            before_recall and new is O.DELIVERED):
        raise InvalidOrderTransition(
            f"This parcel has been recalled ({order.recall_reason}): it comes back to the "
            "pharmacy and must not go to the patient.", current_status=old.value)
    order.status = new
    audit.record(session, action=f"order.{new.value}", entity_type="order", entity_id=order.id,
                 actor=actor, reason=reason, request_id=request_id,
                 before={"status": old.value}, after={"status": new.value})


# --- placing an order -------------------------------------------------------------------

def _lock_idempotency_key(session: Session, patient_id: int, key: str) -> None:
    """Serialise concurrent requests with one key (PostgreSQL advisory lock, this transaction)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"order:{patient_id}:{key}".encode()).digest()
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                    {"k": int.from_bytes(digest[:8], "big", signed=True)})


def _existing(session: Session, patient: PatientProfile, key: str) -> Order | None:
    return session.scalar(select(Order).where(Order.patient_id == patient.id,
                                              Order.idempotency_key == key))


def place_order(session: Session, patient: PatientProfile, request: OrderRequest, *,
                actor: User, pricing: Pricing, idempotency_key: str | None = None,
                now: datetime | None = None, request_id: str | None = None,
                hold_for: timedelta = timedelta(minutes=30)) -> Placed:
    """Check the basket, book the slot, reserve stock and price the order: all or nothing.

    With an idempotency key the same request returns the first order; the same key with a
    different request is refused. Stock stays reserved for ``hold_for`` unless paid.
    """
    now = now or utcnow()
    fingerprint = request.fingerprint()
    if idempotency_key:
        _lock_idempotency_key(session, patient.id, idempotency_key)
        existing = _existing(session, patient, idempotency_key)
        if existing is not None:
            if existing.request_fingerprint != fingerprint:
                raise IdempotencyMismatch(
                    "This Idempotency-Key was already used for a different order.",
                    errors=[{"field": "Idempotency-Key",
                             "message": "Use a new key for a new order."}])
            return Placed(existing, True)

    if not request.lines:
        raise InvalidRequest("The basket is empty.", errors=[{"field": "lines",
                                                              "message": "Add an item."}])
    if len(request.lines) > MAX_LINES:
        raise InvalidRequest(f"At most {MAX_LINES} lines in one order.")
    address = session.get(Address, request.address_id)
    if address is None or address.patient_id != patient.id:
        raise InvalidRequest("Choose one of your delivery addresses.",
                             errors=[{"field": "address_id", "message": "Not your address."}])
    if address.latitude is None or address.longitude is None:
        raise InvalidRequest("We could not locate that address; check it or add another.",
                             errors=[{"field": "address_id", "message": "Not geocoded."}])

    lines = _build_lines(session, patient, request.lines, pricing)
    needs_fridge = any(line.medicine.cold_chain for line in lines)
    # The slot is read here and booked last, just before the caller commits: its row is the
    # one every checkout for that window updates, so its lock is held as briefly as possible.
    slot = slots.get_slot(session, request.slot_id)
    if patient.nominated_pharmacy_id not in (None, slot.pharmacy_id):
        raise InvalidRequest("That slot belongs to another pharmacy.")

    order = Order(
        reference=_reference(), patient_id=patient.id, pharmacy_id=slot.pharmacy_id,
        address_id=address.id, status=O.PLACED, idempotency_key=idempotency_key,
        request_fingerprint=fingerprint, delivery_slot_id=slot.id,
        delivery_window_start=slot.starts_at, delivery_window_end=slot.ends_at,
        currency=pricing.currency, placed_at=now, reserved_until=now + hold_for,
        needs_fridge=needs_fridge, parcel_count=1 + (1 if needs_fridge else 0),
        payments=[],  # known empty: nothing to load when it is paid for
    )
    order.lines = lines
    order.subtotal_minor = sum(ln.line_total_minor for ln in lines if not ln.is_prescription_item)
    order.prescription_charge_minor = sum(ln.line_total_minor for ln in lines
                                          if ln.is_prescription_item)
    order.delivery_fee_minor = pricing.delivery_fee_minor
    order.total_minor = (order.subtotal_minor + order.prescription_charge_minor
                         + order.delivery_fee_minor)
    session.add(order)
    if idempotency_key and session.get_bind().dialect.name != "postgresql":
        # Without the advisory lock (SQLite) another request may hold the key: the unique
        # constraint catches it, inside a savepoint so the session survives.
        try:
            with session.begin_nested():
                session.flush()
        except IntegrityError:
            raise Conflict("An order with this Idempotency-Key is being placed; retry "
                           "shortly.", retry=True) from None
    else:
        session.flush()
    _reserve(session, order, slot_day=slot.starts_at, actor=actor)
    audit.record(session, action="order.placed", entity_type="order", entity_id=order.id,
                 actor=actor, request_id=request_id,
                 after={"status": order.status.value, "total_minor": order.total_minor,
                        "lines": len(lines), "slot": slot.id})
    slots.book(session, slot.id, needs_fridge=needs_fridge, now=now)
    return Placed(order, False)


def _reference() -> str:
    return "D" + secrets.token_hex(5).upper()


def _build_lines(session: Session, patient: PatientProfile, requested: Sequence[LineRequest],
                 pricing: Pricing) -> list[OrderLine]:
    lines: list[OrderLine] = []
    errors: list[dict[str, str]] = []
    seen_items: set[int] = set()
    packs_of: dict[int, int] = {}  # over-the-counter packs per product, over all lines
    lapsed: dict[int, str | None] = {}  # per prescription (re-validating a bundle is slow)
    for n, req in enumerate(requested):
        where = f"lines.{n}"
        if (req.prescription_item_id is None) == (req.medicine_id is None):
            errors.append({"field": where, "message": "Give either prescription_item_id or "
                           "medicine_id."})
            continue
        if req.prescription_item_id is not None:
            # Locked and read afresh: two checkouts of one item (an owing above all) at the
            # same moment must not both pass the checks below.
            locked = lock_items(session, [req.prescription_item_id])
            item = locked[0] if locked else None
            if item is None or item.prescription.patient_id != patient.id:
                errors.append({"field": f"{where}.prescription_item_id",
                               "message": "Not a prescription item you hold."})
                continue
            owing = owes(item)
            if not (item.prescription.status in ORDERABLE_RX or (
                    owing and item.prescription.status is PrescriptionStatus.DISPENSED)) \
                    or item.medicine is None:
                errors.append({"field": f"{where}.prescription_item_id",
                               "message": f"This item is "
                               f"{item.prescription.status.value.replace('_', ' ')} and "
                               "cannot be ordered; request a repeat first."})
                continue
            if (item.id in seen_items or (item.supplied_at is not None and not owing)
                    or on_active_order(session, item.id, owing=owing)):
                errors.append({"field": f"{where}.prescription_item_id",
                               "message": "This item is already on an order, or has been "
                               "supplied."})
                continue
            if why := _closed(session, item, owing, lapsed):
                errors.append({"field": f"{where}.prescription_item_id", "message": why})
                continue
            seen_items.add(item.id)
            units, charge = prescription_line(item, patient, pricing)
            if units <= 0:
                errors.append({"field": f"{where}.prescription_item_id",
                               "message": "This item's quantity needs a pharmacist; call us."})
                continue
            lines.append(OrderLine(medicine=item.medicine, medicine_id=item.medicine.id,
                                   prescription_item_id=item.id, quantity=units,
                                   unit_price_minor=0, line_total_minor=charge,
                                   is_prescription_item=True, for_owing=owing))
        else:
            medicine = session.get(Medicine, req.medicine_id)
            if medicine is None or not medicine.is_active:
                errors.append({"field": f"{where}.medicine_id", "message": "Unknown product."})
                continue
            if medicine.prescription_only:
                errors.append({"field": f"{where}.medicine_id",
                               "message": f"{medicine.name} needs a prescription."})
                continue
            if req.quantity < 1 or packs_of.get(medicine.id, 0) + req.quantity > MAX_OTC_PACKS:
                errors.append({"field": f"{where}.quantity",
                               "message": f"Between 1 and {MAX_OTC_PACKS} packs of "
                               f"{medicine.name} per order, over all lines."})
                continue
            packs_of[medicine.id] = packs_of.get(medicine.id, 0) + req.quantity
            units = req.quantity * (medicine.pack_size or 1)
            lines.append(OrderLine(medicine=medicine, medicine_id=medicine.id, quantity=units,
                                   unit_price_minor=medicine.unit_price_minor,
                                   line_total_minor=medicine.unit_price_minor * req.quantity))
    if errors:
        raise InvalidRequest("Some items cannot be ordered.", errors=errors)
    return lines


def lock_items(session: Session, item_ids: Sequence[int]) -> list[PrescriptionItem]:
    """Lock prescription items (in id order, so that two transactions never deadlock) and
    read them afresh: what is owed and supplied is decided under this lock."""
    if not item_ids:
        return []
    return list(session.scalars(
        select(PrescriptionItem).where(PrescriptionItem.id.in_(sorted(set(item_ids))))
        .order_by(PrescriptionItem.id).with_for_update()
        .execution_options(populate_existing=True)))


def _closed(session: Session, item: PrescriptionItem, owing: bool,
            seen: dict[int, str | None]) -> str | None:
    """Why the item (or what it owes) can no longer be supplied at checkout, or None: its
    prescription lapsed since the last nightly expiry. Judged once per prescription."""
    from .prescriptions import lapsed_once

    reason = lapsed_once(session, item.prescription, seen)
    if not reason:
        return None
    return (f"What we owe you on this item can no longer be supplied: {reason}" if owing
            else f"This prescription can no longer be supplied: {reason}")


def owes(item: PrescriptionItem) -> bool:
    """Whether units of this item are still owed after a short supply (an "owing")."""
    return item.supplied_at is not None and item.quantity_owed > 0


def prescription_line(item: PrescriptionItem, patient: PatientProfile,
                      pricing: Pricing) -> tuple[int, int]:
    """(units, charge) of an order line for this item: the whole quantity, or what is owed
    after a short supply, charged the share of the item's charge not yet paid (a short
    supply was charged pro rata). Units 0: a quantity that needs a pharmacist."""
    whole = int(item.quantity or 0)
    if whole <= 0 or item.quantity != whole:
        return 0, 0
    charge = 0 if patient.charge_exemption else pricing.prescription_charge_minor
    if not owes(item):
        return whole, charge
    owed = min(item.quantity_owed, whole)
    return owed, charge - charge * (whole - owed) // whole


def on_active_order(session: Session, prescription_item_id: int, *,
                    owing: bool = False) -> bool:
    """Whether the item is on an order in progress or already delivered (a line packed
    with none of it supplied does not count); for an owing, whether an order for it is
    waiting to be packed (packing reduces what is owed)."""
    held: ColumnElement[bool] = Order.status.in_(PRE_PACK) if owing else (
        Order.status.in_(HOLDS_ITEM) & (
            Order.status.in_(PRE_PACK) | (OrderLine.quantity_supplied > 0)))
    return session.scalar(
        select(OrderLine.id).join(Order).where(
            OrderLine.prescription_item_id == prescription_item_id, held).limit(1)) is not None


def prescription_problems(session: Session, order: Order) -> list[str]:
    """Why the order's prescription items may not be picked now (empty: they may): each
    item's prescription must be verified (second-checked where the law asks) and still
    within its legal validity today."""
    from .prescriptions import lapsed_once

    problems = []
    checked: dict[int, str | None] = {}
    for line in order.lines:
        if line.prescription_item_id is None:
            continue
        item = session.get(PrescriptionItem, line.prescription_item_id)
        assert item is not None
        rx = item.prescription
        name = item.medication_display or line.medicine.name
        if rx.status is not PrescriptionStatus.VERIFIED and not (
                line.for_owing and rx.status is PrescriptionStatus.DISPENSED):
            problems.append(f"{name}: its prescription is "
                            f"{rx.status.value.replace('_', ' ')}, not verified.")
            continue
        if line.for_owing and line.quantity > item.quantity_owed:
            problems.append(f"{name}: only {item.quantity_owed} units are owed now, not "
                            f"{line.quantity} (an earlier supply was undone or made up).")
            continue
        if reason := lapsed_once(session, rx, checked):
            problems.append(f"{name}: {reason}")
    return problems


def _release_check(session: Session, order: Order, actor: User | None) -> None:
    """Prescription items leave for picking only on a pharmacist's say and when every
    prescription on the order may still be supplied."""
    if not any(line.prescription_item_id is not None for line in order.lines):
        return
    if actor is None or actor.role is not Role.PHARMACIST:
        raise Forbidden("Only a pharmacist releases an order with prescription items.")
    lock_items(session, [line.prescription_item_id for line in order.lines
                         if line.prescription_item_id is not None])
    problems = prescription_problems(session, order)
    if problems:
        raise Conflict("This order cannot be picked: " + " ".join(problems))


def _dispense_supplied_prescriptions(session: Session, order: Order, actor: User) -> None:
    """Each prescription item packed on this order is supplied: it cannot be ordered again
    on its issue, and its next repeat is due from today whatever becomes of the issue's
    other items. An issue whose every item has now been supplied is dispensed."""
    from .prescriptions import record_supply

    supplied: dict[int, list[tuple[PrescriptionItem, OrderLine]]] = {}
    for line in order.lines:
        if line.prescription_item_id is None or not line.quantity_supplied:
            continue
        item = session.get(PrescriptionItem, line.prescription_item_id)
        assert item is not None
        if line.for_owing:
            set_owed(session, item, item.quantity_owed - line.quantity_supplied, actor=actor,
                      reason=f"order {order.reference} supplied {line.quantity_supplied} "
                             "owed units")
        else:
            supplied.setdefault(item.prescription_id, []).append((item, line))
    for prescription_id in sorted(supplied):
        pairs = supplied[prescription_id]
        if pairs[0][0].prescription.status is PrescriptionStatus.VERIFIED:
            record_supply(session, pairs[0][0].prescription, [item for item, _ in pairs], actor)
            for item, line in pairs:
                if line.quantity_supplied is not None and line.quantity_supplied < line.quantity:
                    # Supplied short: the balance is owed, and can be ordered on this item.
                    set_owed(session, item, line.quantity - line.quantity_supplied,
                              actor=actor, reason=f"order {order.reference} supplied "
                              f"{line.quantity_supplied} of {line.quantity}")


def set_owed(session: Session, item: PrescriptionItem, owed: int, *, actor: User | None,
             reason: str) -> None:
    """Set what is owed on an item (locked by the caller), audited."""
    if owed < 0:
        raise Conflict(f"{item.medication_display}: this would supply {-owed} more than "
                       "prescribed; supply at most what is owed.")
    if owed == item.quantity_owed:
        return
    audit.record(session, action="prescription.item_owing", entity_type="prescription",
                 entity_id=item.prescription_id, actor=actor, reason=reason,
                 before={"item": item.id, "quantity_owed": item.quantity_owed},
                 after={"item": item.id, "quantity_owed": owed})
    item.quantity_owed = owed


def _reserve(session: Session, order: Order, *, slot_day: datetime, actor: User | None) -> None:
    """Reserve each line's units from batches, earliest expiry first.

    A batch qualifies when it is available and does not expire before the end of the
    course (delivery day + supply duration) — never sell a patient medicine that expires
    while they take it.
    """
    wanted: dict[int, list[OrderLine]] = {}
    for line in order.lines:
        wanted.setdefault(line.medicine_id, []).append(line)
    delivery_day = slot_day.astimezone(LONDON).date()
    batches = session.scalars(
        select(StockBatch).where(StockBatch.medicine_id.in_(sorted(wanted)),
                                 StockBatch.pharmacy_id == order.pharmacy_id)
        .order_by(StockBatch.id).with_for_update()  # one global lock order: ascending id
    ).all()
    short: list[Shortage] = []
    for medicine_id in sorted(wanted):
        candidates = sorted((b for b in batches if b.medicine_id == medicine_id),
                            key=lambda b: (b.expiry_date, b.id))
        requested = missing = 0
        for line in wanted[medicine_id]:
            requested += line.quantity
            missing += _reserve_from(session, line, line.quantity, candidates,
                                     must_last_until=_course_end(session, line, delivery_day),
                                     actor=actor, reason="reserved for order")
        if missing:
            short.append(Shortage(medicine_id, requested, requested - missing))
    if short:
        # Every short medicine is named (the caller rolls back, then keeps them as lost
        # demand); the first one is also given by id for API clients.
        names = {line.medicine_id: line.medicine.name for line in order.lines}
        listed = ", ".join(names[s.medicine_id] for s in short)
        raise OutOfStock(f"Not enough {listed} in stock for this order.",
                         pharmacy_id=order.pharmacy_id, shortages=short,
                         medicine_id=short[0].medicine_id)
    session.flush()


def keep_lost_demand(session: Session, err: OutOfStock, *, patient: PatientProfile | None,
                     now: datetime | None = None) -> int:
    """Roll the refused checkout back, then keep (commit) what it wanted and could not
    have. Best effort: the patient's answer is the refusal, so a failure here is logged
    and rolled back, never raised. Returns the number of rows kept."""
    session.rollback()
    if err.pharmacy_id is None or not err.shortages:
        return 0
    now = now or utcnow()
    try:
        patient_id = patient.id if patient is not None else None
        for s in err.shortages:
            session.add(LostDemand(pharmacy_id=err.pharmacy_id, medicine_id=s.medicine_id,
                                   patient_id=patient_id, quantity=s.requested,
                                   available=s.available, occurred_at=now))
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        logger.exception("could not keep the lost demand of a refused checkout")
        return 0
    logger.info("checkout refused for lack of stock: %s",
                ", ".join(f"medicine {s.medicine_id} {s.available}/{s.requested}"
                          for s in err.shortages))
    return len(err.shortages)


def _course_end(session: Session, line: OrderLine, delivery_day: date) -> date:
    """The day the patient's supply runs out: no batch may expire before it."""
    course_days = 28
    if line.prescription_item_id is not None:
        item = session.get(PrescriptionItem, line.prescription_item_id)
        course_days = (item.supply_duration_days if item and item.supply_duration_days
                       else 28)
    return delivery_day + timedelta(days=course_days)


def _reserve_from(session: Session, line: OrderLine, units: int,
                  candidates: Sequence[StockBatch], *, must_last_until: date,
                  actor: User | None, reason: str) -> int:
    """Reserve up to ``units`` for ``line`` from locked ``candidates`` (earliest expiry
    first), skipping batches out of use or expiring before the course ends; returns the
    units still needed."""
    needed = units
    for batch in candidates:
        if needed == 0:
            break
        if batch.status is not BatchStatus.AVAILABLE or batch.expiry_date < must_last_until:
            continue
        take = min(needed, batch.quantity_available)
        if take <= 0:
            continue
        batch.quantity_reserved += take
        needed -= take
        session.add(StockAllocation(order_line=line, batch_id=batch.id, quantity=take))
        session.add(StockMovement(batch=batch, kind=MovementKind.RESERVED,
                                  reserved_change=take, reference=line.order.reference,
                                  actor_id=actor.id if actor else None, reason=reason))
    return needed


@dataclass(frozen=True)
class ShortOrder:
    """An order whose reservation could not be moved off a batch taken out of use."""

    order: Order
    medicine: str
    units: int


def move_reservations(session: Session, batch: StockBatch, *, actor: User | None,
                      reason: str) -> list[ShortOrder]:
    """Move the units reserved on ``batch`` (just quarantined or recalled) to other usable
    batches of the medicine, earliest expiry first and lasting the patient's course.

    The caller holds the locks on every batch of the medicine at the pharmacy (ascending
    id, the order checkout takes them in). Units no other batch can cover stay unreserved:
    those orders are returned, and packing them supplies at most what is reserved.
    """
    allocations = list(session.scalars(
        select(StockAllocation).where(StockAllocation.batch_id == batch.id,
                                      StockAllocation.status == AllocationStatus.RESERVED)
        .order_by(StockAllocation.id)))
    if not allocations:
        return []
    others = session.scalars(
        select(StockBatch).where(StockBatch.medicine_id == batch.medicine_id,
                                 StockBatch.pharmacy_id == batch.pharmacy_id,
                                 StockBatch.id != batch.id)
        .order_by(StockBatch.id).with_for_update()).all()
    candidates = sorted(others, key=lambda b: (b.expiry_date, b.id))
    short: list[ShortOrder] = []
    for allocation in allocations:
        line = allocation.order_line
        order = line.order
        _release_allocation(session, batch, allocation, reason=f"{reason}: reservation moved",
                            actor=actor)
        delivery_day = (order.delivery_window_start or utcnow()).astimezone(LONDON).date()
        missing = _reserve_from(session, line, allocation.quantity, candidates,
                                must_last_until=_course_end(session, line, delivery_day),
                                actor=actor, reason=f"moved from lot {batch.lot_number}")
        audit.record(session, action="order.reservation_moved", entity_type="order",
                     entity_id=order.id, actor=actor, reason=reason,
                     after={"batch": batch.id, "units": allocation.quantity,
                            "not_covered": missing})
        if missing:
            short.append(ShortOrder(order, line.medicine.name, missing))
    session.flush()
    return short


def _release_line(session: Session, line: OrderLine, *, reason: str,
                  actor: User | None) -> None:
    """Give back a line's reserved (not yet picked) units."""
    for allocation in line.allocations:
        if allocation.status is not AllocationStatus.RESERVED:
            continue
        batch = session.scalar(select(StockBatch).where(StockBatch.id == allocation.batch_id)
                               .with_for_update())
        assert batch is not None
        _release_allocation(session, batch, allocation, reason=reason, actor=actor)


def _release_allocation(session: Session, batch: StockBatch, allocation: StockAllocation, *,
                        reason: str, actor: User | None) -> None:
    """Give one reservation's units back to its (locked) batch, as a ledger line."""
    batch.quantity_reserved -= allocation.quantity
    allocation.status = AllocationStatus.RELEASED
    session.add(StockMovement(batch=batch, kind=MovementKind.RELEASED,
                              reserved_change=-allocation.quantity,
                              reference=allocation.order_line.order.reference, reason=reason,
                              actor_id=actor.id if actor else None))


def release_stock(session: Session, order: Order, *, reason: str,
                  actor: User | None = None) -> None:
    # Lock batches in ascending id order, as reservation does.
    batch_ids = sorted({a.batch_id for line in order.lines for a in line.allocations})
    if batch_ids:
        session.scalars(select(StockBatch.id).where(StockBatch.id.in_(batch_ids))
                        .order_by(StockBatch.id).with_for_update()).all()
    for line in order.lines:
        _release_line(session, line, reason=reason, actor=actor)
    session.flush()


# --- reading and moving orders ---------------------------------------------------------

def get_order(session: Session, order_id: int, *, lock: bool = False) -> Order:
    stmt = select(Order).where(Order.id == order_id)
    if lock:
        stmt = stmt.with_for_update()
    order = session.scalar(stmt)
    if order is None:
        raise NotFound(f"No order {order_id}.")
    return order


def get_patient_order(session: Session, patient: PatientProfile, order_id: int, *,
                      lock: bool = False) -> Order:
    """A patient's own order; another patient's order is simply not found."""
    order = get_order(session, order_id, lock=lock)
    if order.patient_id != patient.id:
        raise NotFound(f"No order {order_id}.")
    return order


def patient_orders(session: Session, patient: PatientProfile, limit: int = 50) -> list[Order]:
    return list(session.scalars(select(Order).where(Order.patient_id == patient.id)
                                .order_by(Order.created_at.desc(), Order.id.desc())
                                .limit(limit)))


def mark_paid(session: Session, order: Order, *, actor: User | None,
              request_id: str | None = None) -> None:
    """Payment authorised: on to the pharmacist (unverified items) or straight to picking."""
    if order.status is not O.PLACED:
        return  # already moved on (a replayed confirmation)
    order.reserved_until = None
    unverified = any(
        line.prescription_item_id is not None and session.get(
            PrescriptionItem, line.prescription_item_id).prescription.status  # type: ignore[union-attr]
        not in ((PrescriptionStatus.VERIFIED, PrescriptionStatus.DISPENSED) if line.for_owing
                else (PrescriptionStatus.VERIFIED,))
        for line in order.lines)
    _transition(session, order, O.AWAITING_VERIFICATION if unverified else O.READY_TO_PICK,
                actor=actor, request_id=request_id)


def cancel(session: Session, order: Order, *, actor: User | None, reason: str,
           request_id: str | None = None) -> Order:
    """Cancel before dispatch: stock and slot go back. The caller voids or refunds payment."""
    if order.status not in (O.PLACED, O.AWAITING_VERIFICATION, O.READY_TO_PICK, O.PACKED):
        raise InvalidOrderTransition("Only an order that has not left the pharmacy can be "
                                     "cancelled.", current_status=order.status.value)
    if order.status is O.PACKED:
        # A parcel rebooked after a failed delivery has been out of the door already.
        _return_picked(session, order, actor=actor, reason="order cancelled",
                       left_pharmacy=_has_left_pharmacy(session, order))
        _drop_delivery_stops(session, order)
    release_stock(session, order, reason=f"order cancelled: {reason}", actor=actor)
    if order.delivery_slot_id is not None:
        slots.release(session, order.delivery_slot_id, needs_fridge=order.needs_fridge)
    order.cancel_reason = reason
    for line in order.lines:
        line.status = "cancelled"
    _transition(session, order, O.CANCELLED, actor=actor, reason=reason, request_id=request_id)
    session.flush()
    return order


def recall(session: Session, order: Order, *, actor: User | None, reason: str,
           request_id: str | None = None) -> bool:
    """A parcel already out of the door that must not reach the patient (a medicine on it
    was withdrawn): the courier is told not to hand it over and to bring it back, and no
    other delivery slot is offered. The pharmacy refunds it when it is back
    (`checkout.receive_recalled`). False when it had already been recalled."""
    if order.status not in RECALLABLE:
        raise InvalidOrderTransition("Only a parcel out for delivery, or back after a failed "
                                     "attempt, can be recalled.",
                                     current_status=order.status.value)
    if order.recalled_at is not None:
        return False
    order.recalled_at, order.recall_reason = utcnow(), reason
    audit.record(session, action="order.recalled", entity_type="order", entity_id=order.id,
                 actor=actor, reason=reason, request_id=request_id,
                 before={"status": order.status.value, "recalled": False},
                 after={"status": order.status.value, "recalled": True})
    session.flush()
    return True


def recalled_parcels(session: Session) -> list[Order]:
    """Recalls still open, oldest first: parcels not yet received back and refunded, and
    deliveries made before the recall reached the courier that no pharmacist has followed
    up yet."""
    return list(session.scalars(select(Order).where(
        Order.recalled_at.is_not(None), Order.recall_closed_at.is_(None))
        .order_by(Order.recalled_at, Order.id)))


def _drop_delivery_stops(session: Session, order: Order) -> None:
    """A cancelled parcel leaves the delivery plan: its stops that no courier has acted on
    go (it is packed, so no route carrying it has started)."""
    from ..models import DeliveryStop, StopStatus

    for stop in session.scalars(select(DeliveryStop).where(
            DeliveryStop.order_id == order.id,
            DeliveryStop.status.in_([StopStatus.PENDING, StopStatus.UNSERVED]))):
        if not stop.attempts:
            session.delete(stop)


def _has_left_pharmacy(session: Session, order: Order) -> bool:
    """Whether the parcel was ever out for delivery (every transition is audited)."""
    from ..models import AuditEvent

    return session.scalar(select(AuditEvent.id).where(
        AuditEvent.entity_type == "order", AuditEvent.entity_id == str(order.id),
        AuditEvent.action == f"order.{O.OUT_FOR_DELIVERY.value}").limit(1)) is not None


#: Controlled drugs that may be kept in the register (by setting): destroyed only before a
#: witness, so never written off automatically.
CD_WITNESSED_SCHEDULES = frozenset({2, 3})
#: Why fridge lines of a parcel that came back are not put back on the shelf.
COLD_CHAIN_RETURN = ("cold chain not assured after the parcel left the pharmacy: "
                     "destroyed on return")


def _return_picked(session: Session, order: Order, *, actor: User | None, reason: str,
                   left_pharmacy: bool = False) -> None:
    """Picked units back on their batches (a packed order cancelled, a parcel brought back),
    and the controlled drugs among them back into the register. Fridge medicines of a
    parcel that had left the pharmacy are written off as they come back (nobody can vouch
    for their temperature since), unless they are Schedule 2 or 3 controlled drugs, whose
    destruction needs a witness: the pharmacist decides on those."""
    from .inventory_ledger import return_controlled_drugs

    batch_ids = sorted({a.batch_id for line in order.lines for a in line.allocations
                        if a.status is AllocationStatus.PICKED})
    locked = {b.id: b for b in session.scalars(
        select(StockBatch).where(StockBatch.id.in_(batch_ids)).order_by(StockBatch.id)
        .with_for_update())}
    for line in order.lines:
        for allocation in line.allocations:
            if allocation.status is AllocationStatus.PICKED:
                batch = locked[allocation.batch_id]
                batch.quantity_on_hand += allocation.quantity
                allocation.status = AllocationStatus.RELEASED
                session.add(StockMovement(batch=batch, kind=MovementKind.RETURNED,
                                          on_hand_change=allocation.quantity,
                                          reference=order.reference, reason=reason,
                                          actor_id=actor.id if actor else None))
                if left_pharmacy and line.medicine.cold_chain and \
                        line.medicine.cd_schedule not in CD_WITNESSED_SCHEDULES:
                    batch.quantity_on_hand -= allocation.quantity
                    session.add(StockMovement(batch=batch, kind=MovementKind.WRITTEN_OFF,
                                              on_hand_change=-allocation.quantity,
                                              reference=order.reference,
                                              reason=COLD_CHAIN_RETURN,
                                              actor_id=actor.id if actor else None))
                    audit.record(session, action="stock.written_off",
                                 entity_type="stock_batch", entity_id=batch.id, actor=actor,
                                 reason=COLD_CHAIN_RETURN,
                                 after={"quantity": allocation.quantity,
                                        "order": order.reference})
    session.flush()
    return_controlled_drugs(session, order, actor=actor, reason=reason)
    # The patient never had these: their prescription items are not supplied after all
    # (or, for units owed or supplied elsewhere too, are owed again).
    from .prescriptions import undo_supply

    # What is owed is worked out again from the supplies that still stand, whichever of an
    # item's parcels (first supply or owing) comes back, and in whatever order.
    undone: list[PrescriptionItem] = []
    returned = [line for line in order.lines
                if line.prescription_item_id is not None and line.quantity_supplied]
    items = {i.id: i for i in lock_items(session, [line.prescription_item_id  # type: ignore[misc]
                                                  for line in returned])}
    why = f"order {order.reference}: {reason}"
    for line in returned:
        item = items[line.prescription_item_id]  # type: ignore[index]
        elsewhere = _supplied_elsewhere(session, item, order)
        if elsewhere:
            set_owed(session, item, max(0, int(item.quantity or 0) - elsewhere), actor=actor,
                      reason=why)
        else:
            set_owed(session, item, 0, actor=actor, reason=why)
            undone.append(item)
    undo_supply(session, undone, actor, reason=why)


def _supplied_elsewhere(session: Session, item: PrescriptionItem, order: Order) -> int:
    """Units of the item packed on the patient's other orders that count as supplied."""
    return int(session.scalar(
        select(func.coalesce(func.sum(OrderLine.quantity_supplied), 0))
        .select_from(OrderLine).join(Order).where(
            OrderLine.prescription_item_id == item.id, Order.id != order.id,
            Order.status.in_(SUPPLIED_BY))) or 0)


def _record_dispensed(session: Session, order: Order, *, actor: User | None) -> None:
    """The batch ledger's last word on picked units: handed to the patient. No quantity
    moves (the units left stock when picked); the line says which order took which lot."""
    for line in order.lines:
        for allocation in line.allocations:
            if allocation.status is AllocationStatus.PICKED:
                session.add(StockMovement(batch_id=allocation.batch_id,
                                          kind=MovementKind.DISPENSED,
                                          order_line_id=line.id, reference=order.reference,
                                          reason=f"delivered: {allocation.quantity} units",
                                          actor_id=actor.id if actor else None))


def pack(session: Session, order: Order, *, actor: User,
         supplied: Mapping[int, int] | None = None, request_id: str | None = None,
         register_schedules: Collection[int] = frozenset({2})) -> Order:
    """Pick the reserved units (partial supply allowed: ``supplied[line_id] = units``).

    Picked units leave stock; units not supplied are released. Lines supplied short are
    priced down pro rata, and the order total with them (the capture takes the new total).
    """
    if order.status is not O.READY_TO_PICK:
        raise InvalidOrderTransition("Only an order ready to pick can be packed.",
                                     current_status=order.status.value)
    _release_check(session, order, actor)
    supplied = dict(supplied or {})
    unknown = set(supplied) - {line.id for line in order.lines}
    if unknown:
        raise InvalidRequest("Unknown order lines.", errors=[
            {"field": f"supplied.{i}", "message": "Not a line of this order."} for i in unknown])
    batch_ids = sorted({a.batch_id for line in order.lines for a in line.allocations})
    locked = {b.id: b for b in session.scalars(
        select(StockBatch).where(StockBatch.id.in_(batch_ids)).order_by(StockBatch.id)
        .with_for_update())}
    for line in order.lines:
        units = supplied.get(line.id, line.quantity)
        if not 0 <= units <= line.quantity:
            raise InvalidRequest(f"Line {line.id}: supply between 0 and {line.quantity}.")
        held = [a for a in line.allocations if a.status is AllocationStatus.RESERVED]
        for allocation in held:
            batch = locked[allocation.batch_id]
            if batch.status is not BatchStatus.AVAILABLE:
                raise Conflict(f"Lot {batch.lot_number} of {line.medicine.name} is "
                               f"{batch.status.value}: it must not be supplied.")
        reserved = sum(a.quantity for a in held)
        if units > reserved:
            raise Conflict(f"Only {reserved} of {line.quantity} {line.medicine.name} are "
                           "reserved for this order (a lot was taken out of use and no other "
                           f"stock covers the course): supply at most {reserved}, or cancel.")
        remaining = units
        for allocation in sorted(line.allocations, key=lambda a: a.id):
            if allocation.status is not AllocationStatus.RESERVED:
                continue
            batch = locked[allocation.batch_id]
            take = min(remaining, allocation.quantity)
            if take:
                batch.quantity_reserved -= take
                batch.quantity_on_hand -= take
                session.add(StockMovement(batch=batch, kind=MovementKind.PICKED,
                                          on_hand_change=-take, reserved_change=-take,
                                          reference=order.reference, actor_id=actor.id))
                remaining -= take
            rest = allocation.quantity - take
            if rest:
                batch.quantity_reserved -= rest
                session.add(StockMovement(batch=batch, kind=MovementKind.RELEASED,
                                          reserved_change=-rest, reference=order.reference,
                                          reason="short supply", actor_id=actor.id))
            allocation.status = AllocationStatus.PICKED if take else AllocationStatus.RELEASED
        line.quantity_supplied = units
        if units < line.quantity:
            line.status = "short" if units else "not_supplied"
            line.line_total_minor = line.line_total_minor * units // line.quantity
        else:
            line.status = "packed"
    order.subtotal_minor = sum(ln.line_total_minor for ln in order.lines
                               if not ln.is_prescription_item)
    order.prescription_charge_minor = sum(ln.line_total_minor for ln in order.lines
                                          if ln.is_prescription_item)
    order.total_minor = (order.subtotal_minor + order.prescription_charge_minor
                         + order.delivery_fee_minor)
    _transition(session, order, O.PACKED, actor=actor, request_id=request_id,
                reason=None if all(ln.status == "packed" for ln in order.lines)
                else "partial supply")
    session.flush()
    _dispense_supplied_prescriptions(session, order, actor)
    # Controlled drugs leave stock here, so their register entries are written here too.
    from .inventory_ledger import supply_controlled_drugs

    supply_controlled_drugs(session, order, actor=actor, register_schedules=register_schedules)
    from . import outbox

    outbox.add(session, key=f"order-packed:{order.id}",
               function="pharmacy.jobs.deliveries.order_packed", args=[order.id])
    return order


def advance(session: Session, order: Order, new: OrderStatus, *, actor: User | None,
            reason: str | None = None, request_id: str | None = None,
            before_recall: bool = False) -> Order:
    """A plain transition (ready to pick, out for delivery, delivered, failed, returned...).

    A parcel returned to the pharmacy puts its units back on the books (and controlled drugs
    back in the register); the pharmacist writes off whatever is not fit to supply again.
    """
    if new is O.READY_TO_PICK and order.status is O.AWAITING_VERIFICATION:
        _release_check(session, order, actor)
    _transition(session, order, new, actor=actor, reason=reason, request_id=request_id,
                before_recall=before_recall)
    if new is O.DELIVERED:
        _record_dispensed(session, order, actor=actor)
    if new is O.RETURNED:
        _return_picked(session, order, actor=actor, left_pharmacy=True,
                       reason=f"parcel returned: {reason}" if reason else "parcel returned")
    session.flush()
    return order


def expired_unpaid(session: Session, now: datetime) -> list[Order]:
    return list(session.scalars(select(Order).where(Order.status == O.PLACED,
                                                    Order.reserved_until < now)
                                .order_by(Order.id)))

