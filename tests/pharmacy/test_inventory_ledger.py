"""Stock ledger, controlled-drug register and recalls on PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from pharmacy.errors import DomainError
from pharmacy.models import (
    AuditEvent,
    BatchStatus,
    CDRegister,
    CDRegisterEntry,
    MovementKind,
    Order,
    OrderStatus,
    Role,
    StockBatch,
    StockMovement,
)
from pharmacy.services import inventory_ledger as ledger
from pharmacy.services import orders
from tests.factories import MedicineFactory, PharmacyFactory, UserFactory
from tests.pharmacy.test_orders_stock import PRICING, shop  # noqa: F401

TODAY = date.today()


def test_receipts_counts_and_write_offs_keep_the_ledger_exact(db) -> None:  # type: ignore[no-untyped-def]
    pharmacy, actor = PharmacyFactory(), UserFactory(role=Role.PHARMACIST)
    medicine = MedicineFactory()
    batch = ledger.receive(db.session, pharmacy=pharmacy, medicine=medicine, lot_number="A1",
                           expiry_date=TODAY + timedelta(days=300), quantity=100,
                           supplier="AAH", reference="DN-1", actor=actor)
    ledger.receive(db.session, pharmacy=pharmacy, medicine=medicine, lot_number="A1",
                   expiry_date=TODAY + timedelta(days=300), quantity=20, supplier="AAH",
                   reference="DN-2", actor=actor)
    variance = ledger.record_count(db.session, batch.id, 115, actor=actor, note="count")
    assert variance is not None and variance.on_hand_change == -5
    ledger.write_off(db.session, batch.id, 3, reason="damaged box", actor=actor)
    db.session.commit()
    assert db.session.get(StockBatch, batch.id).quantity_on_hand == 112
    assert ledger.ledger_discrepancies(db.session) == []
    with pytest.raises(DomainError):
        ledger.write_off(db.session, batch.id, 1000, reason="x", actor=actor)
    with pytest.raises(DomainError):
        ledger.receive(db.session, pharmacy=pharmacy, medicine=medicine, lot_number="OLD",
                       expiry_date=TODAY, quantity=5, supplier="AAH", reference="DN-3",
                       actor=actor)
    db.session.rollback()


def test_concurrent_picks_never_take_a_batch_below_zero(app: Flask, db, shop) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    from tests.pharmacy.test_orders_stock import _checkout

    order_ids = [_checkout(app, shop) for _ in range(50)]
    assert all(isinstance(o, int) for o in order_ids)
    actor_id = UserFactory(role=Role.PHARMACIST).id
    for order_id in order_ids:
        db.session.get(Order, order_id).status = OrderStatus.READY_TO_PICK
    db.session.commit()

    def pack(order_id: int) -> str:
        from pharmacy.extensions import db as _db
        from pharmacy.models import User

        with app.app_context():
            try:
                order = orders.get_order(_db.session, order_id, lock=True)
                orders.pack(_db.session, order, actor=_db.session.get(User, actor_id))
                _db.session.commit()
                return "packed"
            except DomainError as err:
                _db.session.rollback()
                return err.code
            finally:
                _db.session.remove()

    # Every order packed twice at once: each order is packed exactly once.
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(pack, order_ids + order_ids))
    assert results.count("packed") == 50
    db.session.expire_all()
    batch = db.session.get(StockBatch, shop["batch_id"])
    assert (batch.quantity_on_hand, batch.quantity_reserved) == (0, 0)
    assert ledger.ledger_discrepancies(db.session) == []


def test_cd_register_balance_equals_its_entries_and_entries_cannot_be_edited(db) -> None:  # type: ignore[no-untyped-def]
    pharmacy, actor = PharmacyFactory(), UserFactory(role=Role.PHARMACIST)
    morphine = MedicineFactory(name="Morphine 10mg modified-release tablets", cd_schedule=2)
    batch = ledger.receive(db.session, pharmacy=pharmacy, medicine=morphine, lot_number="M1",
                           expiry_date=TODAY + timedelta(days=400), quantity=60,
                           supplier="Alliance", reference="INV-9", actor=actor)
    entry = ledger.add_register_entry(
        db.session, pharmacy_id=pharmacy.id, medicine_id=morphine.id,
        kind=ledger.CDEntryKind.SUPPLY, quantity=-28, counterparty="A Patient", actor=actor,
        batch_id=batch.id, id_checked=True)
    ledger.correct_register_entry(db.session, entry.id, quantity_delta=-2,
                                  reason="28 written, 30 supplied", actor=actor)
    batch.quantity_on_hand -= 30
    db.session.add(StockMovement(batch=batch, kind="dispensed", on_hand_change=-30))
    db.session.commit()

    entries = db.session.scalars(select(CDRegisterEntry).order_by(CDRegisterEntry.sequence)).all()
    assert [e.sequence for e in entries] == [1, 2, 3]
    assert [e.running_balance for e in entries] == [60, 32, 30]
    running = 0
    for e in entries:
        running += e.quantity
        assert e.running_balance == running
    check = ledger.check_register(db.session, pharmacy.id, morphine.id, actor=actor)
    assert check.consistent and check.register_balance == 30

    entries[1].quantity = -20
    with pytest.raises(PermissionError):
        db.session.flush()
    db.session.rollback()
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(text("UPDATE cd_register_entries SET quantity = 1"))
    db.session.rollback()
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(text("DELETE FROM cd_register_entries"))
    db.session.rollback()
    with pytest.raises(DomainError):  # never below zero
        ledger.add_register_entry(db.session, pharmacy_id=pharmacy.id,
                                  medicine_id=morphine.id, kind=ledger.CDEntryKind.SUPPLY,
                                  quantity=-31, counterparty="x", actor=actor)
    db.session.rollback()

    # Stock leaves the shelf without a register entry: the check flags it.
    batch = db.session.get(StockBatch, batch.id)
    batch.quantity_on_hand -= 1
    db.session.add(StockMovement(batch=batch, kind="written_off", on_hand_change=-1,
                                 reason="unexplained"))
    db.session.commit()
    flagged = ledger.check_register(db.session, pharmacy.id, morphine.id, actor=actor)
    assert not flagged.consistent and flagged.physical_stock == 29


def test_concurrent_register_entries_are_numbered_without_gaps(app: Flask, db) -> None:  # type: ignore[no-untyped-def]
    pharmacy = PharmacyFactory()
    medicine = MedicineFactory(cd_schedule=2)
    db.session.commit()
    ids = (pharmacy.id, medicine.id)

    def receipt(_: int) -> None:
        from pharmacy.extensions import db as _db

        with app.app_context():
            ledger.add_register_entry(_db.session, pharmacy_id=ids[0], medicine_id=ids[1],
                                      kind=ledger.CDEntryKind.RECEIPT, quantity=5,
                                      counterparty="AAH", actor=None)
            _db.session.commit()
            _db.session.remove()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(receipt, range(40)))
    entries = db.session.scalars(select(CDRegisterEntry).order_by(CDRegisterEntry.sequence)).all()
    assert [e.sequence for e in entries] == list(range(1, 41))
    assert [e.running_balance for e in entries] == [5 * n for n in range(1, 41)]
    assert db.session.scalar(select(CDRegister.balance)) == 200


def test_packing_a_schedule_2_order_writes_the_supply_in_the_register(  # noqa: F811
        app: Flask, db, shop) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    from tests.pharmacy.test_orders_stock import _checkout

    medicine = db.session.get(StockBatch, shop["batch_id"]).medicine
    medicine.cd_schedule = 2
    ledger.add_register_entry(db.session, pharmacy_id=db.session.get(
        StockBatch, shop["batch_id"]).pharmacy_id, medicine_id=medicine.id,
        kind=ledger.CDEntryKind.RECEIPT, quantity=50, counterparty="AAH", actor=None)
    db.session.commit()
    order_id = _checkout(app, shop)
    order = db.session.get(Order, order_id)
    order.status = OrderStatus.READY_TO_PICK
    orders.pack(db.session, order, actor=UserFactory(role=Role.PHARMACIST))
    db.session.commit()
    supply = db.session.scalar(select(CDRegisterEntry).where(CDRegisterEntry.kind == "supply"))
    assert supply.quantity == -1 and supply.running_balance == 49
    assert supply.order_id == order_id and supply.patient_id == order.patient_id


def test_controlled_drugs_coming_back_from_an_order_go_back_into_the_register(  # type: ignore[no-untyped-def]
        app: Flask, client, db, shop) -> None:  # noqa: F811
    from tests.factories import DEFAULT_PASSWORD
    from tests.pharmacy.helpers import web_login
    from tests.pharmacy.test_orders_stock import _checkout

    batch = db.session.get(StockBatch, shop["batch_id"])
    batch.medicine.cd_schedule = 2
    ledger.add_register_entry(db.session, pharmacy_id=batch.pharmacy_id,
                              medicine_id=batch.medicine_id, kind=ledger.CDEntryKind.RECEIPT,
                              quantity=batch.quantity_on_hand, counterparty="AAH", actor=None)
    db.session.commit()
    pharmacist = UserFactory(role=Role.PHARMACIST)
    on_hand = batch.quantity_on_hand
    cancelled, returned = _checkout(app, shop), _checkout(app, shop)
    db.session.expire_all()  # the checkouts ran in their own sessions
    for order_id in (cancelled, returned):
        order = db.session.get(Order, order_id)
        order.status = OrderStatus.READY_TO_PICK
        orders.pack(db.session, order, actor=pharmacist)
    db.session.commit()

    orders.cancel(db.session, db.session.get(Order, cancelled), actor=pharmacist,
                  reason="patient changed their mind")
    parcel = db.session.get(Order, returned)
    parcel.status = OrderStatus.FAILED  # out for delivery, nobody home, brought back
    orders.advance(db.session, parcel, OrderStatus.RETURNED, actor=pharmacist,
                   reason="not collected")
    db.session.commit()
    assert ledger.return_controlled_drugs(db.session, parcel, actor=pharmacist,
                                          reason="again") == []  # nothing twice

    db.session.refresh(batch)
    assert batch.quantity_on_hand == on_hand
    entries = db.session.scalars(select(CDRegisterEntry).order_by(CDRegisterEntry.sequence)).all()
    assert [(e.kind.value, e.quantity, e.order_id) for e in entries] == [
        ("receipt", on_hand, None), ("supply", -1, cancelled), ("supply", -1, returned),
        ("return", 1, cancelled), ("return", 1, returned)]
    assert entries[-1].running_balance == on_hand
    check = ledger.check_register(db.session, batch.pharmacy_id, batch.medicine_id)
    assert check.consistent
    assert ledger.ledger_discrepancies(db.session) == []
    returned_moves = db.session.scalars(select(StockMovement).where(
        StockMovement.kind == MovementKind.RETURNED).order_by(StockMovement.id)).all()
    assert [m.reason for m in returned_moves] == ["order cancelled",
                                                  "parcel returned: not collected"]
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    page = client.get(f"/pharmacist/cd-registers/{entries[0].register_id}").get_data(
        as_text=True)
    assert page.count("came back (see the return entry)") == 2


def test_a_recall_finds_every_patient_who_received_the_lot(app: Flask, db, shop) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    from tests.pharmacy.test_orders_stock import _checkout

    delivered = [_checkout(app, shop) for _ in range(3)]
    packed = _checkout(app, shop)
    pending = _checkout(app, shop)
    actor = UserFactory(role=Role.PHARMACIST)
    for order_id in [*delivered, packed]:
        order = db.session.get(Order, order_id)
        order.status = OrderStatus.READY_TO_PICK
        orders.pack(db.session, order, actor=actor)
        if order_id != packed:
            order.status = OrderStatus.DELIVERED
    db.session.commit()
    batch = db.session.get(StockBatch, shop["batch_id"])
    report = ledger.recall_lot(db.session, medicine_id=batch.medicine_id,
                               lot_number=batch.lot_number, reason="MHRA class 2 recall",
                               actor=actor)
    db.session.commit()
    assert sorted(p.order.id for p in report.received_by) == sorted(delivered)
    assert all(p.email for p in report.received_by)
    # Packed units of the lot are in a parcel: stop it. Units only reserved move to other
    # stock; here there is none, so the pending order is short and cannot be packed whole.
    assert [o.id for o in report.undelivered_orders] == [packed]
    assert [(s.order.id, s.units) for s in report.short_orders] == [(pending, 1)]
    assert db.session.get(StockBatch, batch.id).status is BatchStatus.RECALLED
    order = db.session.get(Order, pending)
    order.status = OrderStatus.READY_TO_PICK
    with pytest.raises(DomainError, match="Only 0 of 1"):
        orders.pack(db.session, order, actor=actor)
    db.session.rollback()
    # A recalled batch is never allocated again.
    assert _checkout(app, shop) == "out_of_stock"
    assert db.session.scalar(select(func.count(StockMovement.id)).where(
        StockMovement.kind == "recalled")) == 1


def test_quarantine_moves_reservations_to_another_lot_so_the_quarantined_one_is_never_packed(  # type: ignore[no-untyped-def]
        app: Flask, db, shop) -> None:  # noqa: F811
    from tests.pharmacy.test_orders_stock import _checkout

    first = db.session.get(StockBatch, shop["batch_id"])
    actor = UserFactory(role=Role.PHARMACIST)
    from pharmacy.models import Pharmacy

    later = ledger.receive(db.session, pharmacy=db.session.get(Pharmacy, first.pharmacy_id),
                           medicine=first.medicine,
                           lot_number="LATER", expiry_date=first.expiry_date + timedelta(days=90),
                           quantity=5, supplier="AAH", reference="DN-9", actor=actor)
    db.session.commit()
    order_id = _checkout(app, shop)
    order = db.session.get(Order, order_id)
    assert [a.batch_id for a in order.lines[0].allocations] == [first.id]  # FEFO

    taken = ledger.quarantine(db.session, first.id, reason="fridge alarm", actor=actor)
    db.session.commit()
    assert taken.short_orders == []
    db.session.refresh(first)
    db.session.refresh(later)
    assert (first.quantity_reserved, later.quantity_reserved) == (0, 1)
    order = db.session.get(Order, order_id)
    order.status = OrderStatus.READY_TO_PICK
    orders.pack(db.session, order, actor=actor)
    db.session.commit()
    picked = db.session.scalars(select(StockMovement).where(
        StockMovement.kind == MovementKind.PICKED)).all()
    assert [(m.batch_id, m.on_hand_change) for m in picked] == [(later.id, -1)]
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "order.reservation_moved", AuditEvent.entity_id == str(order_id)))
    assert ledger.ledger_discrepancies(db.session) == []


def test_a_delivered_order_closes_its_lots_ledger_with_a_dispensed_line(  # type: ignore[no-untyped-def]
        app: Flask, db, shop) -> None:  # noqa: F811
    from tests.pharmacy.test_orders_stock import _checkout

    order = db.session.get(Order, _checkout(app, shop))
    actor = UserFactory(role=Role.PHARMACIST)
    order.status = OrderStatus.READY_TO_PICK
    orders.pack(db.session, order, actor=actor)
    order.status = OrderStatus.OUT_FOR_DELIVERY
    orders.advance(db.session, order, OrderStatus.DELIVERED, actor=actor)
    db.session.commit()
    kinds = [(m.kind, m.on_hand_change, m.reference) for m in db.session.scalars(
        select(StockMovement).where(StockMovement.batch_id == shop["batch_id"])
        .order_by(StockMovement.id))]
    assert kinds[-2:] == [(MovementKind.PICKED, -1, order.reference),
                          (MovementKind.DISPENSED, 0, order.reference)]
    dispensed = db.session.scalar(select(StockMovement).where(
        StockMovement.kind == MovementKind.DISPENSED))
    assert dispensed.order_line_id == order.lines[0].id
    assert ledger.ledger_discrepancies(db.session) == []


def test_packing_refuses_a_batch_taken_out_of_use_behind_its_back(  # type: ignore[no-untyped-def]
        app: Flask, db, shop) -> None:  # noqa: F811
    from tests.pharmacy.test_orders_stock import _checkout

    order = db.session.get(Order, _checkout(app, shop))
    batch = db.session.get(StockBatch, shop["batch_id"])
    batch.status = BatchStatus.QUARANTINED  # as if set without the service
    order.status = OrderStatus.READY_TO_PICK
    db.session.commit()
    with pytest.raises(DomainError, match="is quarantined: it must not be supplied"):
        orders.pack(db.session, order, actor=UserFactory(role=Role.PHARMACIST))


def test_near_expiry_report(db) -> None:  # type: ignore[no-untyped-def]
    pharmacy, actor = PharmacyFactory(), UserFactory(role=Role.PHARMACIST)
    medicine = MedicineFactory()
    soon = ledger.receive(db.session, pharmacy=pharmacy, medicine=medicine, lot_number="S",
                          expiry_date=TODAY + timedelta(days=10), quantity=5, supplier="AAH",
                          reference="DN", actor=actor)
    ledger.receive(db.session, pharmacy=pharmacy, medicine=medicine, lot_number="L",
                   expiry_date=TODAY + timedelta(days=200), quantity=5, supplier="AAH",
                   reference="DN", actor=actor)
    assert [b.id for b in ledger.near_expiry(db.session, pharmacy_id=pharmacy.id,
                                             within_days=30)] == [soon.id]


def test_stock_recall_and_register_pages(client, db) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import DEFAULT_PASSWORD
    from tests.pharmacy.helpers import csrf_token, web_login

    pharmacy, pharmacist = PharmacyFactory(), UserFactory(role=Role.PHARMACIST)
    morphine = MedicineFactory(name="Morphine 10mg modified-release tablets", cd_schedule=2)
    ledger.receive(db.session, pharmacy=pharmacy, medicine=morphine, lot_number="M9",
                   expiry_date=TODAY + timedelta(days=20), quantity=10, supplier="AAH",
                   reference="DN", actor=pharmacist)
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    page = client.get("/pharmacist/stock").get_data(as_text=True)
    assert "M9" in page and "agrees with every batch" in page
    register_id = db.session.scalar(select(CDRegister.id))
    register = client.get(f"/pharmacist/cd-registers/{register_id}").get_data(as_text=True)
    assert "agrees with the entries" in register and "receipt" in register
    token = csrf_token(client, "/pharmacist/stock")
    recalled = client.post("/pharmacist/recalls", data={
        "csrf_token": token, "medicine_id": str(morphine.id), "lot_number": "M9",
        "reason": "MHRA drug alert"})
    assert recalled.status_code == 302
    report = client.get(recalled.headers["Location"]).get_data(as_text=True)
    assert "Nobody has received this lot" in report
    unknown = client.post("/pharmacist/recalls", data={
        "csrf_token": token, "medicine_id": str(morphine.id), "lot_number": "NOPE",
        "reason": "x"})
    assert unknown.status_code == 302


def test_a_delivery_quoting_a_purchase_order_counts_against_it(db) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.models import AuditEvent, PurchaseOrder, PurchaseOrderLine, PurchaseOrderStatus
    from pharmacy.services import forecasting

    pharmacy, actor = PharmacyFactory(), UserFactory(role=Role.PHARMACIST)
    first, second = MedicineFactory(), MedicineFactory()
    purchase = PurchaseOrder(pharmacy_id=pharmacy.id, supplier="AAH", reference="PO-77")
    purchase.lines = [PurchaseOrderLine(medicine_id=first.id, quantity=56),
                      PurchaseOrderLine(medicine_id=second.id, quantity=28)]
    db.session.add(purchase)
    db.session.flush()

    def on_order() -> dict[int, int]:
        inputs = forecasting.stock_inputs(db.session, pharmacy.id, [first.id, second.id])
        return {m: i.on_order for m, i in inputs.items()}

    assert on_order() == {first.id: 56, second.id: 28}
    expiry = TODAY + timedelta(days=400)
    ledger.receive(db.session, pharmacy=pharmacy, medicine=first, lot_number="L1",
                   expiry_date=expiry, quantity=28, supplier="AAH", reference="PO-77",
                   actor=actor)
    assert on_order() == {first.id: 28, second.id: 28}
    assert purchase.status is PurchaseOrderStatus.DRAFT
    # Over-delivery is booked into stock but the line never shows more than was ordered.
    ledger.receive(db.session, pharmacy=pharmacy, medicine=first, lot_number="L2",
                   expiry_date=expiry, quantity=40, supplier="AAH", reference=" PO-77 ",
                   actor=actor)
    # A delivery note that is not an open order's reference changes no order.
    ledger.receive(db.session, pharmacy=pharmacy, medicine=second, lot_number="L3",
                   expiry_date=expiry, quantity=28, supplier="AAH", reference="DN-9",
                   actor=actor)
    assert on_order() == {first.id: 0, second.id: 28}
    ledger.receive(db.session, pharmacy=pharmacy, medicine=second, lot_number="L4",
                   expiry_date=expiry, quantity=28, supplier="AAH", reference="PO-77",
                   actor=actor)
    db.session.commit()
    assert purchase.status is PurchaseOrderStatus.RECEIVED
    assert [line.quantity_received for line in purchase.lines] == [56, 28]
    assert on_order() == {first.id: 0, second.id: 0}
    events = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "purchase_order.received")).all()
    assert len(events) == 3 and events[-1].after["status"] == "received"
    assert ledger.ledger_discrepancies(db.session) == []


def test_quarantine_and_release_are_ledger_lines_and_a_recall_is_never_released(db) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.models import AuditEvent, MovementKind

    pharmacy, actor = PharmacyFactory(), UserFactory(role=Role.PHARMACIST)
    medicine = MedicineFactory()
    batch = ledger.receive(db.session, pharmacy=pharmacy, medicine=medicine, lot_number="Q1",
                           expiry_date=TODAY + timedelta(days=200), quantity=30,
                           supplier="AAH", reference="DN-Q", actor=actor)
    with pytest.raises(DomainError, match="not quarantined"):
        ledger.release_from_quarantine(db.session, batch.id, reason="checked", actor=actor)
    ledger.quarantine(db.session, batch.id, reason="fridge alarm", actor=actor)
    with pytest.raises(DomainError, match="Say why"):
        ledger.release_from_quarantine(db.session, batch.id, reason=" ", actor=actor)
    # Past its expiry date a quarantined batch is written off, not released.
    with pytest.raises(DomainError, match="expired"):
        ledger.release_from_quarantine(db.session, batch.id, reason="ok", actor=actor,
                                       today=TODAY + timedelta(days=201))
    ledger.release_from_quarantine(db.session, batch.id, reason="temperature log within range",
                                   actor=actor)
    assert batch.status is BatchStatus.AVAILABLE
    kinds = [m.kind for m in db.session.scalars(select(StockMovement).where(
        StockMovement.batch_id == batch.id).order_by(StockMovement.id))]
    assert kinds == [MovementKind.RECEIVED, MovementKind.QUARANTINED, MovementKind.RELEASED]
    released = db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "stock.batch_released"))
    assert released is not None and released.after == {"status": "available"}

    ledger.recall_lot(db.session, medicine_id=medicine.id, lot_number="Q1", reason="alert",
                      actor=actor)
    with pytest.raises(DomainError, match="recalled"):
        ledger.quarantine(db.session, batch.id, reason="downgrade", actor=actor)
    with pytest.raises(DomainError, match="recalled"):
        ledger.release_from_quarantine(db.session, batch.id, reason="x", actor=actor)
    assert batch.status is BatchStatus.RECALLED
    db.session.commit()
    assert ledger.ledger_discrepancies(db.session) == []


def test_outstanding_purchase_lines_and_batch_search(db) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.models import PurchaseOrder, PurchaseOrderLine, PurchaseOrderStatus

    pharmacy, other = PharmacyFactory(), PharmacyFactory()
    actor = UserFactory(role=Role.PHARMACIST)
    first = MedicineFactory(name="Amoxicillin 500mg capsules")
    second = MedicineFactory(name="Sertraline 50mg tablets")
    purchase = PurchaseOrder(pharmacy_id=pharmacy.id, supplier="AAH", reference="PO-1",
                             status=PurchaseOrderStatus.SENT)
    purchase.lines = [PurchaseOrderLine(medicine_id=first.id, quantity=21, quantity_received=21),
                      PurchaseOrderLine(medicine_id=second.id, quantity=28, quantity_received=7)]
    closed = PurchaseOrder(pharmacy_id=pharmacy.id, supplier="AAH", reference="PO-2",
                           status=PurchaseOrderStatus.CANCELLED)
    closed.lines = [PurchaseOrderLine(medicine_id=first.id, quantity=5)]
    db.session.add_all([purchase, closed])
    for where, lot in ((pharmacy, "AMX_1"), (other, "AMX-2")):
        ledger.receive(db.session, pharmacy=where, medicine=first, lot_number=lot,
                       expiry_date=TODAY + timedelta(days=90), quantity=5, supplier="AAH",
                       reference="DN", actor=actor)
    db.session.flush()
    due = ledger.outstanding_purchase_lines(db.session, pharmacy.id)
    assert [(line.medicine_id, line.quantity - line.quantity_received) for line in due] == [
        (second.id, 21)]
    assert [b.lot_number for b in ledger.find_batches(
        db.session, pharmacy_id=pharmacy.id, text="amoxi")] == ["AMX_1"]
    # "_" and "%" are literal characters in the search, not wildcards.
    assert ledger.find_batches(db.session, pharmacy_id=pharmacy.id, text="X%1") == []
    assert [b.lot_number for b in ledger.find_batches(
        db.session, pharmacy_id=pharmacy.id, text="x_1")] == ["AMX_1"]
    with pytest.raises(DomainError):
        ledger.get_batch(db.session, ledger.find_batches(
            db.session, pharmacy_id=other.id)[0].id, pharmacy_id=pharmacy.id)


def test_writing_off_a_controlled_drug_is_a_witnessed_destruction_in_the_register(db) -> None:  # type: ignore[no-untyped-def]
    pharmacy, actor = PharmacyFactory(), UserFactory(role=Role.PHARMACIST)
    morphine = MedicineFactory(cd_schedule=2)
    batch = ledger.receive(db.session, pharmacy=pharmacy, medicine=morphine, lot_number="CD1",
                           expiry_date=TODAY + timedelta(days=60), quantity=20, supplier="AAH",
                           reference="DN-CD", actor=actor)
    with pytest.raises(DomainError, match="witnessed"):
        ledger.write_off(db.session, batch.id, 5, reason="expired", actor=actor)
    ledger.write_off(db.session, batch.id, 5, reason="broken ampoules", actor=actor,
                     witness="A. Inspector")
    db.session.commit()
    entry = db.session.scalars(select(CDRegisterEntry).order_by(CDRegisterEntry.id)).all()[-1]
    assert (entry.kind.value, entry.quantity, entry.running_balance, entry.note) == (
        "destruction", -5, 15, "broken ampoules")
    assert "A. Inspector" in entry.counterparty
    assert ledger.check_register(db.session, pharmacy.id, morphine.id).consistent


@pytest.mark.parametrize(("setting", "expected"), [
    ("2", {2}), ("2,3", {2, 3}), (" 3 ", {2, 3}), ("", {2}), ("1,6,x", {2}),
    ("3,4,5", {2, 3, 4, 5}),
])
def test_the_register_setting_always_keeps_schedule_2(setting: str, expected: set[int]) -> None:
    assert ledger.register_schedules(setting) == expected


def test_schedule_3_goes_in_the_register_when_the_setting_says_so(db) -> None:  # type: ignore[no-untyped-def]
    pharmacy, actor = PharmacyFactory(), UserFactory(role=Role.PHARMACIST)
    medicine = MedicineFactory(cd_schedule=3)
    for setting, entries in (("2", 0), ("2,3", 1)):
        ledger.receive(db.session, pharmacy=pharmacy, medicine=medicine, lot_number=f"S{setting}",
                       expiry_date=TODAY + timedelta(days=200), quantity=10, supplier="AAH",
                       reference="DN-3", actor=actor,
                       register_schedules=ledger.register_schedules(setting))
        assert db.session.scalar(select(func.count(CDRegisterEntry.id))) == entries
    db.session.rollback()


def test_a_move_decided_on_a_stale_read_sees_the_committed_row(db, shop) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The same move sent twice at once: the second request read the batch before the first
    committed; under the lock it sees the new location and records nothing (no stale
    version error, no second ledger line)."""
    from sqlalchemy.orm import Session

    from pharmacy.models import MovementKind, StockBatch, StockMovement

    actor = UserFactory(role=Role.PHARMACIST)
    db.session.commit()


    stale = db.session.get(StockBatch, shop["batch_id"])  # read, no lock
    assert stale.location != "Fridge 2"
    with Session(db.engine) as other:
        first = ledger.move_batch(other, shop["batch_id"], "Fridge  2", actor=other.get(
            type(actor), actor.id))
        assert first is not None
        other.commit()
    assert ledger.move_batch(db.session, shop["batch_id"], "Fridge 2", actor=actor) is None
    db.session.commit()
    assert db.session.get(StockBatch, shop["batch_id"]).location == "Fridge 2"
    assert db.session.scalar(select(func.count()).select_from(StockMovement).where(
        StockMovement.kind == MovementKind.MOVED)) == 1
