"""The stock ledger beyond orders: receipts, counts, write-offs, quarantine, recalls, expiry,
and the controlled-drug register.

Every change is an append-only ``StockMovement`` (and an audit event); the batch's cached
quantities always equal the sum of its movements, which ``ledger_discrepancies`` checks.
Controlled drugs of Schedule 2 (and 3, by setting) also get a register entry for every
receipt and supply, numbered without gaps under a lock on the register's head row.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Conflict, InvalidRequest, NotFound
from ..models import (
    AllocationStatus,
    BatchStatus,
    CDEntryKind,
    CDRegister,
    CDRegisterEntry,
    Medicine,
    MovementKind,
    Order,
    OrderLine,
    OrderStatus,
    PatientProfile,
    Pharmacy,
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderStatus,
    StockAllocation,
    StockBatch,
    StockMovement,
    User,
)
from ..models.base import utcnow
from . import audit

if TYPE_CHECKING:
    from .orders import ShortOrder

# Schedules whose movements go in the register. Schedule 3 is kept by setting.
DEFAULT_REGISTER_SCHEDULES: frozenset[int] = frozenset({2})


def _batch_for_update(session: Session, batch_id: int) -> StockBatch:
    # populate_existing: a batch this session read before the lock is refreshed from the
    # locked row, so a change decided on it sees what a concurrent request committed.
    batch = session.scalar(select(StockBatch).where(StockBatch.id == batch_id)
                           .with_for_update().execution_options(populate_existing=True))
    if batch is None:
        raise NotFound(f"No stock batch {batch_id}.")
    return batch


def register_schedules(setting: object) -> frozenset[int]:
    """The schedules the CD_REGISTER_SCHEDULES setting names ("2", "2,3"): Schedule 2 always
    (the law requires its register); 3-5 only if named; anything else is ignored."""
    named = {int(part) for part in str(setting or "").replace(" ", "").split(",")
             if part in {"3", "4", "5"}}
    return frozenset({2} | named)


def needs_register(medicine: Medicine, schedules: Collection[int]) -> bool:
    return medicine.cd_schedule is not None and medicine.cd_schedule in schedules


# --- controlled-drug register --------------------------------------------------------------

def _register(session: Session, pharmacy_id: int, medicine_id: int) -> CDRegister:
    """The register's head row, created on first use and locked for this transaction."""
    stmt = (select(CDRegister).where(CDRegister.pharmacy_id == pharmacy_id,
                                     CDRegister.medicine_id == medicine_id).with_for_update())
    register = session.scalar(stmt)
    if register is None:
        try:
            with session.begin_nested():
                session.add(CDRegister(pharmacy_id=pharmacy_id, medicine_id=medicine_id))
        except IntegrityError:
            pass  # another transaction opened it first; the locking read below waits for it
        register = session.scalar(stmt)
    assert register is not None
    return register


def add_register_entry(session: Session, *, pharmacy_id: int, medicine_id: int,
                       kind: CDEntryKind, quantity: int, counterparty: str,
                       actor: User | None, batch_id: int | None = None,
                       patient_id: int | None = None, prescriber_id: int | None = None,
                       prescription_id: int | None = None, order_id: int | None = None,
                       reference: str | None = None, id_checked: bool | None = None,
                       corrects_entry_id: int | None = None,
                       note: str | None = None) -> CDRegisterEntry:
    """Append one register line; the running balance never goes below zero."""
    if quantity == 0:
        raise InvalidRequest("A register entry needs a quantity.")
    register = _register(session, pharmacy_id, medicine_id)
    balance = register.balance + quantity
    if balance < 0:
        raise Conflict(f"The register holds {register.balance}; {-quantity} cannot be supplied.")
    register.entry_count += 1
    register.balance = balance
    entry = CDRegisterEntry(
        register_id=register.id, sequence=register.entry_count, kind=kind, quantity=quantity,
        running_balance=balance, counterparty=counterparty[:200], patient_id=patient_id,
        prescriber_id=prescriber_id, prescription_id=prescription_id, order_id=order_id,
        batch_id=batch_id, reference=reference, entered_by_id=actor.id if actor else None,
        id_checked=id_checked, corrects_entry_id=corrects_entry_id, note=note)
    session.add(entry)
    session.flush()
    audit.record(session, action=f"cd_register.{kind.value}", entity_type="cd_register",
                 entity_id=register.id, actor=actor,
                 after={"sequence": entry.sequence, "quantity": quantity, "balance": balance})
    return entry


def correct_register_entry(session: Session, entry_id: int, *, quantity_delta: int,
                           reason: str, actor: User) -> CDRegisterEntry:
    """A correction is a new entry pointing at the wrong one; the original stays as written."""
    original = session.get(CDRegisterEntry, entry_id)
    if original is None:
        raise NotFound(f"No register entry {entry_id}.")
    if not reason.strip():
        raise InvalidRequest("A correction needs a reason.")
    register = session.get(CDRegister, original.register_id)
    assert register is not None
    return add_register_entry(
        session, pharmacy_id=register.pharmacy_id, medicine_id=register.medicine_id,
        kind=CDEntryKind.CORRECTION, quantity=quantity_delta,
        counterparty=original.counterparty, actor=actor, corrects_entry_id=original.id,
        note=reason.strip())


@dataclass(frozen=True)
class RegisterCheck:
    register_id: int
    medicine: str
    register_balance: int
    entries_sum: int
    physical_stock: int

    @property
    def consistent(self) -> bool:
        return self.register_balance == self.entries_sum == self.physical_stock


def check_register(session: Session, pharmacy_id: int, medicine_id: int, *,
                   actor: User | None = None) -> RegisterCheck:
    """Compare the register's balance with its entries and with the stock on the shelves."""
    register = session.scalar(select(CDRegister).where(CDRegister.pharmacy_id == pharmacy_id,
                                                       CDRegister.medicine_id == medicine_id))
    if register is None:
        raise NotFound("This medicine has no register at this pharmacy.")
    entries_sum = session.scalar(select(func.coalesce(func.sum(CDRegisterEntry.quantity), 0))
                                 .where(CDRegisterEntry.register_id == register.id)) or 0
    physical = session.scalar(select(func.coalesce(func.sum(StockBatch.quantity_on_hand), 0))
                              .where(StockBatch.pharmacy_id == pharmacy_id,
                                     StockBatch.medicine_id == medicine_id)) or 0
    result = RegisterCheck(register.id, register.medicine.name, register.balance,
                           int(entries_sum), int(physical))
    if not result.consistent:
        audit.record(session, action="cd_register.discrepancy", entity_type="cd_register",
                     entity_id=register.id, actor=actor,
                     after={"register": result.register_balance, "entries": result.entries_sum,
                            "physical": result.physical_stock})
    return result


@dataclass(frozen=True)
class Handover:
    """How a supplied controlled drug reached the patient (from the proof of delivery)."""

    recipient: str | None
    at: datetime
    id_checked: bool


def register_handovers(session: Session, register_id: int) -> dict[int, Handover]:
    """Per supply entry of the register (by entry id), its handover to the patient: the
    register line is written when the drug leaves stock at packing, and the delivery's
    proof (who received it, when, whether their ID was checked) is recorded with the
    delivery. Entries not yet handed over are absent."""
    from ..models import AttemptOutcome, DeliveryAttempt, DeliveryStop

    rows = session.execute(
        select(CDRegisterEntry.id, DeliveryAttempt.recipient_name,
               DeliveryAttempt.attempted_at, DeliveryAttempt.id_checked)
        .join(DeliveryStop, DeliveryStop.order_id == CDRegisterEntry.order_id)
        .join(DeliveryAttempt, DeliveryAttempt.stop_id == DeliveryStop.id)
        .where(CDRegisterEntry.register_id == register_id,
               CDRegisterEntry.kind == CDEntryKind.SUPPLY,
               DeliveryAttempt.outcome == AttemptOutcome.DELIVERED)
        .order_by(DeliveryAttempt.attempted_at)).all()
    return {entry_id: Handover(name, at, bool(checked)) for entry_id, name, at, checked in rows}


def register_prescribers(session: Session, register_id: int) -> dict[int, str]:
    """Prescriber name and registration per entry id, for the register's supply lines."""
    from ..models import Prescriber

    rows = session.execute(
        select(CDRegisterEntry.id, Prescriber.given_name, Prescriber.family_name,
               Prescriber.registration_body, Prescriber.registration_number)
        .join(Prescriber, Prescriber.id == CDRegisterEntry.prescriber_id)
        .where(CDRegisterEntry.register_id == register_id)).all()
    return {entry_id: f"{given or ''} {family} ({body} {number})".strip()
            for entry_id, given, family, body, number in rows}


# --- the stock ledger ------------------------------------------------------------------------

def receive(session: Session, *, pharmacy: Pharmacy, medicine: Medicine, lot_number: str,
            expiry_date: date, quantity: int, supplier: str, reference: str, actor: User,
            register_schedules: Collection[int] = DEFAULT_REGISTER_SCHEDULES,
            location: str | None = None, today: date | None = None) -> StockBatch:
    """Book in a delivery against its delivery note or purchase order."""
    today = today or utcnow().date()
    if quantity <= 0:
        raise InvalidRequest("Receive a positive quantity.")
    if expiry_date <= today:
        raise InvalidRequest("This stock has already expired; do not book it in.")
    if not reference.strip() or not supplier.strip():
        raise InvalidRequest("Give the supplier and the delivery note or order number.")
    batch = session.scalar(select(StockBatch).where(
        StockBatch.pharmacy_id == pharmacy.id, StockBatch.medicine_id == medicine.id,
        StockBatch.lot_number == lot_number).with_for_update())
    if batch is None:
        batch = StockBatch(pharmacy_id=pharmacy.id, medicine_id=medicine.id,
                           lot_number=lot_number, expiry_date=expiry_date, quantity_on_hand=0,
                           supplier=supplier, location=_location(location))
        session.add(batch)
    elif batch.expiry_date != expiry_date:
        raise Conflict(f"Lot {lot_number} is on record with expiry {batch.expiry_date}.")
    batch.quantity_on_hand += quantity
    session.add(StockMovement(batch=batch, kind=MovementKind.RECEIVED, on_hand_change=quantity,
                              reference=reference, actor_id=actor.id))
    session.flush()
    if needs_register(medicine, register_schedules):
        add_register_entry(session, pharmacy_id=pharmacy.id, medicine_id=medicine.id,
                           kind=CDEntryKind.RECEIPT, quantity=quantity, counterparty=supplier,
                           actor=actor, batch_id=batch.id, reference=reference)
    audit.record(session, action="stock.received", entity_type="stock_batch",
                 entity_id=batch.id, actor=actor,
                 after={"quantity": quantity, "on_hand": batch.quantity_on_hand})
    _receive_against_order(session, pharmacy_id=pharmacy.id, medicine_id=medicine.id,
                           reference=reference.strip(), quantity=quantity, actor=actor)
    return batch


def _receive_against_order(session: Session, *, pharmacy_id: int, medicine_id: int,
                           reference: str, quantity: int, actor: User) -> None:
    """A delivery quoting an open purchase order's reference counts against its line.

    The line's received quantity goes up (never past what was ordered: extra units are
    still booked into stock, but are not "on order" any more than the rest), and the order
    is received once every line is. Reorder suggestions count only what is still to come.
    """
    purchase = session.scalar(select(PurchaseOrder).where(
        PurchaseOrder.pharmacy_id == pharmacy_id, PurchaseOrder.reference == reference,
        PurchaseOrder.status.in_([PurchaseOrderStatus.DRAFT, PurchaseOrderStatus.SENT]))
        .with_for_update())
    if purchase is None:
        return
    line = next((ln for ln in purchase.lines if ln.medicine_id == medicine_id), None)
    if line is None:
        return
    before = line.quantity_received
    line.quantity_received = min(line.quantity, before + quantity)
    after: dict[str, object] = {"medicine_id": medicine_id,
                                "quantity_received": line.quantity_received,
                                "quantity": line.quantity}
    if all(ln.quantity_received >= ln.quantity for ln in purchase.lines):
        purchase.status = PurchaseOrderStatus.RECEIVED
        after["status"] = purchase.status.value
    audit.record(session, action="purchase_order.received", entity_type="purchase_order",
                 entity_id=purchase.id, actor=actor,
                 before={"quantity_received": before}, after=after)


def record_count(session: Session, batch_id: int, counted: int, *, actor: User,
                 note: str | None = None) -> StockMovement | None:
    """A stock take: the counted quantity becomes on-hand, the variance a movement."""
    if counted < 0:
        raise InvalidRequest("A count cannot be negative.")
    batch = _batch_for_update(session, batch_id)
    if counted < batch.quantity_reserved:
        raise Conflict(f"{batch.quantity_reserved} units of this batch are reserved for "
                       "orders; resolve those before recording a lower count.")
    variance = counted - batch.quantity_on_hand
    audit.record(session, action="stock.counted", entity_type="stock_batch", entity_id=batch.id,
                 actor=actor, reason=note,
                 before={"on_hand": batch.quantity_on_hand},
                 after={"on_hand": counted, "variance": variance})
    if variance == 0:
        return None
    batch.quantity_on_hand = counted
    movement = StockMovement(batch=batch, kind=MovementKind.COUNTED, on_hand_change=variance,
                             reason=note or "stock take", actor_id=actor.id)
    session.add(movement)
    session.flush()
    return movement


LOCATION_MAX = 50


def _location(text: str | None) -> str | None:
    """Spaces collapsed (so "Shelf  A" and "Shelf A" are one place); empty is None."""
    return " ".join((text or "").split()) or None


def move_batch(session: Session, batch_id: int, location: str, *, actor: User,
               reason: str | None = None) -> StockMovement | None:
    """Put a batch somewhere else (shelf, fridge, CD cabinet): a ledger line that moves no
    quantity, and an audit event. Moving it where it already is records nothing (a
    resubmitted form)."""
    location = _location(location) or ""
    if not location:
        raise InvalidRequest("Say where the batch is now.")
    if len(location) > LOCATION_MAX:
        raise InvalidRequest(f"A location is at most {LOCATION_MAX} characters.")
    batch = _batch_for_update(session, batch_id)
    before = batch.location
    if before == location:
        return None
    batch.location = location
    note = f"{before or 'no location'} to {location}"
    if reason and reason.strip():
        note += f": {reason.strip()}"
    movement = StockMovement(batch=batch, kind=MovementKind.MOVED, reason=note,
                             actor_id=actor.id)
    session.add(movement)
    audit.record(session, action="stock.batch_moved", entity_type="stock_batch",
                 entity_id=batch.id, actor=actor, reason=(reason or "").strip() or None,
                 before={"location": before}, after={"location": location})
    session.flush()
    return movement


def write_off(session: Session, batch_id: int, quantity: int, *, reason: str,
              actor: User, witness: str | None = None,
              register_schedules: Collection[int] = DEFAULT_REGISTER_SCHEDULES) -> StockMovement:
    """Remove damaged, expired or destroyed units, with the reason.

    A controlled drug kept in the register leaves stock only by witnessed destruction: the
    authorised witness is named, and the register gets a destruction entry, so its balance
    still agrees with the shelf.
    """
    if quantity <= 0 or not reason.strip():
        raise InvalidRequest("Write off a positive quantity, with a reason.")
    batch = _batch_for_update(session, batch_id)
    witness = (witness or "").strip()
    in_register = needs_register(batch.medicine, register_schedules)
    if in_register and not witness:
        raise InvalidRequest("Destroying a controlled drug needs the name of the authorised "
                             "person who witnessed it.")
    if quantity > batch.quantity_on_hand - batch.quantity_reserved:
        raise Conflict("That is more than the unreserved stock of this batch.")
    batch.quantity_on_hand -= quantity
    movement = StockMovement(batch=batch, kind=MovementKind.WRITTEN_OFF, on_hand_change=-quantity,
                             reason=reason.strip(), actor_id=actor.id)
    session.add(movement)
    if in_register:
        add_register_entry(session, pharmacy_id=batch.pharmacy_id, medicine_id=batch.medicine_id,
                           kind=CDEntryKind.DESTRUCTION, quantity=-quantity,
                           counterparty=f"destroyed, witnessed by {witness}", actor=actor,
                           batch_id=batch.id, note=reason.strip())
    audit.record(session, action="stock.written_off", entity_type="stock_batch",
                 entity_id=batch.id, actor=actor, reason=reason.strip(),
                 after={"quantity": quantity, "on_hand": batch.quantity_on_hand})
    session.flush()
    return movement


def supply_controlled_drugs(session: Session, order: Order, *, actor: User | None,
                            register_schedules: Collection[int] = DEFAULT_REGISTER_SCHEDULES,
                            id_checked: bool | None = None) -> list[CDRegisterEntry]:
    """Register entries for the controlled drugs an order takes out of stock (at packing)."""
    entries = []
    patient = session.get(PatientProfile, order.patient_id)
    for line in order.lines:
        if not needs_register(line.medicine, register_schedules):
            continue
        for allocation in line.allocations:
            if allocation.status is not AllocationStatus.PICKED:
                continue
            prescription_id = prescriber_id = None
            if line.prescription_item_id is not None:
                from ..models import PrescriptionItem

                item = session.get(PrescriptionItem, line.prescription_item_id)
                if item is not None:
                    prescription_id = item.prescription_id
                    prescriber_id = item.prescription.prescriber_id
            entries.append(add_register_entry(
                session, pharmacy_id=order.pharmacy_id, medicine_id=line.medicine_id,
                kind=CDEntryKind.SUPPLY, quantity=-allocation.quantity,
                counterparty=(f"{patient.given_name} {patient.family_name}" if patient
                              else "unknown patient"),
                actor=actor, batch_id=allocation.batch_id, patient_id=order.patient_id,
                prescriber_id=prescriber_id, prescription_id=prescription_id,
                order_id=order.id, reference=order.reference, id_checked=id_checked))
    return entries


def return_controlled_drugs(session: Session, order: Order, *, actor: User | None,
                            reason: str) -> list[CDRegisterEntry]:
    """Register entries for controlled drugs coming back into stock from an order (a packed
    order cancelled, a parcel brought back): whatever the register supplied to the order,
    per batch, and has not already taken back. Running it twice adds nothing."""
    rows = session.execute(
        select(CDRegister.pharmacy_id, CDRegister.medicine_id, CDRegisterEntry.batch_id,
               func.sum(CDRegisterEntry.quantity))
        .join(CDRegister, CDRegister.id == CDRegisterEntry.register_id)
        .where(CDRegisterEntry.order_id == order.id,
               CDRegisterEntry.kind.in_([CDEntryKind.SUPPLY, CDEntryKind.RETURN]))
        .group_by(CDRegister.pharmacy_id, CDRegister.medicine_id, CDRegisterEntry.batch_id)
        .order_by(CDRegister.medicine_id, CDRegisterEntry.batch_id)).all()
    entries = []
    for pharmacy_id, medicine_id, batch_id, net in rows:
        if net is None or net >= 0:
            continue
        entries.append(add_register_entry(
            session, pharmacy_id=pharmacy_id, medicine_id=medicine_id, kind=CDEntryKind.RETURN,
            quantity=-int(net), counterparty=f"back into stock: {reason}"[:200], actor=actor,
            batch_id=batch_id, patient_id=order.patient_id, order_id=order.id,
            reference=order.reference))
    return entries


# --- quarantine, recalls and expiry ------------------------------------------------------------

@dataclass(frozen=True)
class OutOfUse:
    """A batch taken out of use, and the orders whose reserved units no other batch could
    take over (they can be packed only short, or cancelled)."""

    batch: StockBatch
    short_orders: list[ShortOrder]


def _lock_medicine_batches(session: Session, batch_id: int) -> StockBatch:
    """Lock every batch of this batch's medicine at its pharmacy, in ascending id order (the
    order checkout locks them in, so the two cannot deadlock); returns the batch."""
    found = session.execute(select(StockBatch.medicine_id, StockBatch.pharmacy_id)
                            .where(StockBatch.id == batch_id)).one_or_none()
    if found is None:
        raise NotFound(f"No stock batch {batch_id}.")
    session.scalars(select(StockBatch.id).where(StockBatch.medicine_id == found[0],
                                                StockBatch.pharmacy_id == found[1])
                    .order_by(StockBatch.id).with_for_update()).all()
    return _batch_for_update(session, batch_id)


def quarantine(session: Session, batch_id: int, *, reason: str, actor: User,
               status: BatchStatus = BatchStatus.QUARANTINED) -> OutOfUse:
    """Take a batch out of use (it stays on the books until written off or returned).

    Units it holds for orders not yet packed move to other usable batches at once, so a
    quarantined or recalled lot is never packed for a patient.
    """
    from .orders import move_reservations

    if not reason.strip():
        raise InvalidRequest("Say why the batch is quarantined.")
    batch = _lock_medicine_batches(session, batch_id)
    before = batch.status
    if before is status:
        return OutOfUse(batch, [])
    # A recall outranks every other status, and an expired batch can only be recalled:
    # quarantining either would let a later release put it back into use.
    if before is BatchStatus.RECALLED or (before is BatchStatus.EXPIRED
                                          and status is not BatchStatus.RECALLED):
        raise Conflict(f"This batch is {before.value}; it stays out of use until it is "
                       "written off or returned.")
    batch.status = status
    kind = MovementKind.RECALLED if status is BatchStatus.RECALLED else MovementKind.QUARANTINED
    session.add(StockMovement(batch=batch, kind=kind, reason=reason.strip(), actor_id=actor.id))
    audit.record(session, action=f"stock.batch_{status.value}", entity_type="stock_batch",
                 entity_id=batch.id, actor=actor, reason=reason.strip(),
                 before={"status": before.value}, after={"status": status.value})
    session.flush()
    short = move_reservations(session, batch, actor=actor,
                              reason=f"lot {batch.lot_number} {status.value}")
    return OutOfUse(batch, short)


def release_from_quarantine(session: Session, batch_id: int, *, reason: str, actor: User,
                            today: date | None = None) -> StockBatch:
    """Put a quarantined batch back into use, with the reason (the check that cleared it).

    Only a quarantine is released: a recalled or expired batch stays out of use, and so does a
    quarantined batch whose expiry date has passed. The ledger line moves no quantity.
    """
    today = today or utcnow().date()
    if not reason.strip():
        raise InvalidRequest("Say why the batch can be used again.")
    batch = _batch_for_update(session, batch_id)
    if batch.status is not BatchStatus.QUARANTINED:
        raise Conflict(f"This batch is {batch.status.value}, not quarantined.")
    if batch.expiry_date < today:
        raise Conflict("This batch has expired; write it off instead of releasing it.")
    batch.status = BatchStatus.AVAILABLE
    session.add(StockMovement(batch=batch, kind=MovementKind.RELEASED,
                              reason=f"released from quarantine: {reason.strip()}",
                              actor_id=actor.id))
    audit.record(session, action="stock.batch_released", entity_type="stock_batch",
                 entity_id=batch.id, actor=actor, reason=reason.strip(),
                 before={"status": BatchStatus.QUARANTINED.value},
                 after={"status": BatchStatus.AVAILABLE.value})
    session.flush()
    return batch


@dataclass(frozen=True)
class RecallPatient:
    patient: PatientProfile
    email: str | None
    order: Order
    units: int


@dataclass(frozen=True)
class RecallReport:
    batches: list[StockBatch]
    received_by: list[RecallPatient]       # delivered: contact these patients
    undelivered_orders: list[Order]        # still with us or on the road: stop them
    short_orders: list[ShortOrder] = field(default_factory=list)  # reservations not moved


def recall_lot(session: Session, *, medicine_id: int, lot_number: str, reason: str,
               actor: User) -> RecallReport:
    """Quarantine every batch of a lot (all pharmacies) and list who has it and what holds it."""
    batches = list(session.scalars(select(StockBatch).where(
        StockBatch.medicine_id == medicine_id, StockBatch.lot_number == lot_number)
        .order_by(StockBatch.id)))
    if not batches:
        raise NotFound(f"No stock of lot {lot_number} of that medicine is on record.")
    short: list[ShortOrder] = []
    for batch in batches:
        short += quarantine(session, batch.id, reason=f"recall: {reason}", actor=actor,
                            status=BatchStatus.RECALLED).short_orders
    report = recall_report(session, [b.id for b in batches], batches)
    return RecallReport(report.batches, report.received_by, report.undelivered_orders, short)


def recall_report(session: Session, batch_ids: list[int],
                  batches: list[StockBatch] | None = None) -> RecallReport:
    rows = session.execute(
        select(Order, OrderLine, StockAllocation)
        .join(OrderLine, OrderLine.order_id == Order.id)
        .join(StockAllocation, StockAllocation.order_line_id == OrderLine.id)
        .where(StockAllocation.batch_id.in_(batch_ids),
               StockAllocation.status.in_([AllocationStatus.RESERVED, AllocationStatus.PICKED]))
        .order_by(Order.id)).all()
    received: dict[tuple[int, int], RecallPatient] = {}
    undelivered: dict[int, Order] = {}
    for order, _line, allocation in rows:
        if order.status is OrderStatus.DELIVERED and allocation.status is AllocationStatus.PICKED:
            key = (order.patient_id, order.id)
            patient = session.get(PatientProfile, order.patient_id)
            assert patient is not None
            email = patient.user.email if patient.user else None
            units = received[key].units if key in received else 0
            received[key] = RecallPatient(patient, email, order, units + allocation.quantity)
        elif order.status not in (OrderStatus.CANCELLED, OrderStatus.REFUNDED,
                                  OrderStatus.RETURNED, OrderStatus.DELIVERED):
            undelivered[order.id] = order
    return RecallReport(batches or list(session.scalars(
        select(StockBatch).where(StockBatch.id.in_(batch_ids)))),
        list(received.values()), list(undelivered.values()))


def near_expiry(session: Session, *, pharmacy_id: int, within_days: int,
                today: date | None = None) -> list[StockBatch]:
    """Usable batches with stock that expire within ``within_days``, soonest first."""
    today = today or utcnow().date()
    return list(session.scalars(select(StockBatch).where(
        StockBatch.pharmacy_id == pharmacy_id, StockBatch.status == BatchStatus.AVAILABLE,
        StockBatch.quantity_on_hand > 0,
        StockBatch.expiry_date <= today + timedelta(days=within_days))
        .order_by(StockBatch.expiry_date, StockBatch.id)))


@dataclass(frozen=True)
class LedgerDiscrepancy:
    batch_id: int
    on_hand: int
    ledger_on_hand: int
    reserved: int
    ledger_reserved: int


def ledger_discrepancies(session: Session, *, pharmacy_id: int | None = None
                         ) -> list[LedgerDiscrepancy]:
    """Batches whose cached quantities differ from the sum of their movements (should be none)."""
    sums = (select(StockMovement.batch_id,
                   func.sum(StockMovement.on_hand_change).label("on_hand"),
                   func.sum(StockMovement.reserved_change).label("reserved"))
            .group_by(StockMovement.batch_id).subquery())
    stmt = (select(StockBatch, sums.c.on_hand, sums.c.reserved)
            .outerjoin(sums, sums.c.batch_id == StockBatch.id))
    if pharmacy_id is not None:
        stmt = stmt.where(StockBatch.pharmacy_id == pharmacy_id)
    out = []
    for batch, on_hand, reserved in session.execute(stmt):
        if (batch.quantity_on_hand, batch.quantity_reserved) != (on_hand or 0, reserved or 0):
            out.append(LedgerDiscrepancy(batch.id, batch.quantity_on_hand, int(on_hand or 0),
                                         batch.quantity_reserved, int(reserved or 0)))
    return out


def expire_and_quarantine(session: Session, today: date) -> list[int]:
    """Automatic quarantine at expiry (delegates to the expiry sweep the nightly job runs)."""
    from .stock import expire_batches

    return expire_batches(session, today)


def last_movements(session: Session, batch_id: int, limit: int = 50) -> list[StockMovement]:
    return list(session.scalars(select(StockMovement).where(StockMovement.batch_id == batch_id)
                                .order_by(StockMovement.id.desc()).limit(limit)))


def get_batch(session: Session, batch_id: int, *, pharmacy_id: int) -> StockBatch:
    """One batch of this pharmacy (another pharmacy's is "not found", as a missing one)."""
    batch = session.get(StockBatch, batch_id)
    if batch is None or batch.pharmacy_id != pharmacy_id:
        raise NotFound(f"No stock batch {batch_id}.")
    return batch


def find_batches(session: Session, *, pharmacy_id: int, text: str = "",
                 limit: int = 50) -> list[StockBatch]:
    """Batches whose medicine name or lot number contains ``text``, soonest expiry first."""
    stmt = (select(StockBatch).join(Medicine, Medicine.id == StockBatch.medicine_id)
            .where(StockBatch.pharmacy_id == pharmacy_id))
    if text.strip():
        escaped = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        stmt = stmt.where(Medicine.name.ilike(pattern, escape="\\")
                          | StockBatch.lot_number.ilike(pattern, escape="\\"))
    return list(session.scalars(stmt.order_by(StockBatch.expiry_date, StockBatch.id)
                                .limit(limit)))


def receivable_medicines(session: Session) -> list[Medicine]:
    """The formulary's active medicines, by name: what a delivery may be booked in as."""
    return list(session.scalars(select(Medicine).where(Medicine.is_active)
                                .order_by(Medicine.name, Medicine.id)))


def outstanding_purchase_lines(session: Session, pharmacy_id: int) -> list[PurchaseOrderLine]:
    """Lines of open (draft or sent) purchase orders with units still to come, oldest first."""
    return list(session.scalars(
        select(PurchaseOrderLine).join(PurchaseOrder)
        .where(PurchaseOrder.pharmacy_id == pharmacy_id,
               PurchaseOrder.status.in_([PurchaseOrderStatus.DRAFT, PurchaseOrderStatus.SENT]),
               PurchaseOrderLine.quantity_received < PurchaseOrderLine.quantity)
        .order_by(PurchaseOrder.id, PurchaseOrderLine.id)))
