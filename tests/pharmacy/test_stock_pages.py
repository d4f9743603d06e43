"""Goods in and the per-batch actions (count, write-off, quarantine, release, move) as pages."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from pharmacy.models import (
    AuditEvent,
    BatchStatus,
    CDRegisterEntry,
    MovementKind,
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderStatus,
    Role,
    StockBatch,
    StockMovement,
)
from pharmacy.services import inventory_ledger as ledger
from tests.factories import DEFAULT_PASSWORD, MedicineFactory, PharmacyFactory, UserFactory
from tests.pharmacy.helpers import csrf_token, web_login

EXPIRY = (date.today() + timedelta(days=400)).isoformat()


@pytest.fixture()
def stock_world(client, db):  # type: ignore[no-untyped-def]
    pharmacy, pharmacist = PharmacyFactory(), UserFactory(role=Role.PHARMACIST)
    medicine = MedicineFactory(name="Sertraline 50mg tablets")
    morphine = MedicineFactory(name="Morphine 10mg tablets", cd_schedule=2)
    purchase = PurchaseOrder(pharmacy_id=pharmacy.id, supplier="AAH", reference="PO-123",
                             status=PurchaseOrderStatus.SENT)
    purchase.lines = [PurchaseOrderLine(medicine_id=medicine.id, quantity=56)]
    db.session.add(purchase)
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    return {"pharmacy": pharmacy, "pharmacist": pharmacist, "medicine": medicine,
            "morphine": morphine, "purchase": purchase}


def _receipt(client, **fields: str):  # type: ignore[no-untyped-def]
    data = {"csrf_token": csrf_token(client, "/pharmacist/stock/goods-in"), "lot_number": "S1",
            "expiry_date": EXPIRY, "quantity": "28", "supplier": "AAH", "reference": "PO-123",
            "location": "shelf B", **fields}
    return client.post("/pharmacist/stock/goods-in", data=data)


def test_goods_in_books_the_batch_and_counts_against_the_purchase_order(  # type: ignore[no-untyped-def]
        client, db, stock_world) -> None:
    medicine, purchase = stock_world["medicine"], stock_world["purchase"]
    page = client.get("/pharmacist/stock/goods-in").get_data(as_text=True)
    assert "PO-123" in page and "Sertraline 50mg tablets" in page and ">56<" in page
    assert client.get("/pharmacist/stock").get_data(as_text=True).count("Goods in") == 1

    done = _receipt(client, medicine_id=str(medicine.id))
    assert done.status_code == 302
    batch = db.session.scalar(select(StockBatch))
    assert done.headers["Location"].endswith(f"/pharmacist/stock/batches/{batch.id}")
    assert (batch.lot_number, batch.quantity_on_hand, batch.location) == ("S1", 28, "shelf B")
    movement = db.session.scalar(select(StockMovement))
    assert (movement.kind, movement.on_hand_change, movement.reference) == (
        MovementKind.RECEIVED, 28, "PO-123")
    assert movement.actor_id == stock_world["pharmacist"].id
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "stock.received"))
    db.session.refresh(purchase)
    assert purchase.lines[0].quantity_received == 28
    page = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "Booked in 28 units of Sertraline 50mg tablets, lot S1." in page
    due = client.get("/pharmacist/stock/goods-in").get_data(as_text=True)
    assert ">28<" in due  # still due on the order


def test_a_controlled_drug_received_through_the_page_is_in_its_register(  # type: ignore[no-untyped-def]
        client, db, stock_world) -> None:
    done = _receipt(client, medicine_id=str(stock_world["morphine"].id), lot_number="M1",
                    quantity="100", reference="DN-55", supplier="Alliance")
    assert done.status_code == 302
    entry = db.session.scalar(select(CDRegisterEntry))
    assert (entry.kind.value, entry.quantity, entry.running_balance, entry.counterparty,
            entry.reference) == ("receipt", 100, 100, "Alliance", "DN-55")


@pytest.mark.parametrize(("fields", "message"), [
    ({"medicine_id": "999999"}, "Choose the medicine from the formulary."),
    ({"medicine_id": "abc"}, "Choose the medicine from the formulary."),
    ({"quantity": "ten"}, "The quantity must be a whole number of units from 1"),
    ({"quantity": "²"}, "The quantity must be a whole number of units from 1"),
    ({"quantity": "0"}, "The quantity must be a whole number of units from 1"),
    ({"quantity": "99999999999999999999"}, "The quantity must be a whole number"),
    ({"expiry_date": "31/12/2030"}, "Give the expiry date"),
    ({"lot_number": "x" * 65}, "The lot number is too long"),
    ({"reference": " "}, "Give the delivery note or purchase order number."),
])
def test_bad_goods_in_is_a_readable_422_that_keeps_what_was_typed(  # type: ignore[no-untyped-def]
        client, db, stock_world, fields, message) -> None:
    response = _receipt(client, **{"medicine_id": str(stock_world["medicine"].id), **fields})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in page
    assert 'value="shelf B"' in page and 'value="AAH"' in page  # nothing typed is lost
    assert db.session.scalar(select(StockBatch)) is None


def test_goods_in_refused_by_the_ledger_shows_its_reason(client, db, stock_world) -> None:  # type: ignore[no-untyped-def]
    medicine_id = str(stock_world["medicine"].id)
    past = _receipt(client, medicine_id=medicine_id, expiry_date=date.today().isoformat())
    assert past.status_code == 422
    assert "already expired" in past.get_data(as_text=True)
    assert _receipt(client, medicine_id=medicine_id).status_code == 302
    clash = _receipt(client, medicine_id=medicine_id,
                     expiry_date=(date.today() + timedelta(days=30)).isoformat())
    assert clash.status_code == 409
    assert "is on record with expiry" in clash.get_data(as_text=True)
    assert 'value="S1"' in clash.get_data(as_text=True)


def _batch(db, stock_world, quantity: int = 50) -> StockBatch:  # type: ignore[no-untyped-def]
    batch = ledger.receive(db.session, pharmacy=stock_world["pharmacy"],
                           medicine=stock_world["medicine"], lot_number="B1",
                           expiry_date=date.today() + timedelta(days=100), quantity=quantity,
                           supplier="AAH", reference="DN-1", actor=stock_world["pharmacist"])
    db.session.commit()
    return batch


def _act(client, batch_id: int, action: str, **fields: str):  # type: ignore[no-untyped-def]
    path = f"/pharmacist/stock/batches/{batch_id}"
    return client.post(f"{path}/{action}", data={"csrf_token": csrf_token(client, path),
                                                 **fields})


def test_count_write_off_quarantine_and_release(client, db, stock_world) -> None:  # type: ignore[no-untyped-def]
    batch = _batch(db, stock_world)
    found = client.get("/pharmacist/stock?q=sertra").get_data(as_text=True)
    assert f"/pharmacist/stock/batches/{batch.id}" in found

    counted = _act(client, batch.id, "count", counted="47", note="shelf count")
    assert counted.status_code == 302
    page = client.get(counted.headers["Location"]).get_data(as_text=True)
    assert "Count recorded: 47 units, 3 fewer than on the books." in page
    assert _act(client, batch.id, "count", counted="47").status_code == 302

    assert _act(client, batch.id, "write-off", quantity="2", reason="crushed box").status_code \
        == 302
    db.session.refresh(batch)
    assert batch.quantity_on_hand == 45

    assert _act(client, batch.id, "quarantine", reason="fridge alarm").status_code == 302
    db.session.refresh(batch)
    assert batch.status is BatchStatus.QUARANTINED
    page = client.get(f"/pharmacist/stock/batches/{batch.id}").get_data(as_text=True)
    assert "Release from quarantine" in page and "fridge alarm" in page
    assert _act(client, batch.id, "release", reason="log within range").status_code == 302
    db.session.refresh(batch)
    assert batch.status is BatchStatus.AVAILABLE

    actions = set(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.entity_type == "stock_batch")))
    assert {"stock.counted", "stock.written_off", "stock.batch_quarantined",
            "stock.batch_released"} <= actions
    changes = [m.on_hand_change for m in db.session.scalars(
        select(StockMovement).order_by(StockMovement.id))]
    assert changes == [50, -3, -2, 0, 0]
    assert ledger.ledger_discrepancies(db.session) == []


def test_a_batch_is_moved_with_a_ledger_line_and_an_audit_event(  # type: ignore[no-untyped-def]
        client, db, stock_world) -> None:
    batch = _batch(db, stock_world)
    before = batch.location
    moved = _act(client, batch.id, "move", location=" CD  cabinet 2 ", note="new cabinet")
    assert moved.status_code == 302
    page = client.get(moved.headers["Location"]).get_data(as_text=True)
    assert "Batch moved to CD cabinet 2." in page
    assert f"{before or 'no location'} to CD cabinet 2: new cabinet" in page  # the ledger
    assert _act(client, batch.id, "move", location="CD cabinet 2").status_code == 302  # again
    db.session.refresh(batch)
    assert (batch.location, batch.quantity_on_hand, batch.quantity_reserved) == (
        "CD cabinet 2", 50, 0)
    moves = db.session.scalars(select(StockMovement).where(
        StockMovement.kind == MovementKind.MOVED)).all()
    assert [(m.on_hand_change, m.reserved_change) for m in moves] == [(0, 0)]  # once
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "stock.batch_moved"))
    assert event.before == {"location": before} and event.after == {"location": "CD cabinet 2"}
    assert event.reason == "new cabinet"
    assert ledger.ledger_discrepancies(db.session) == []


@pytest.mark.parametrize(("action", "fields", "status", "message"), [
    ("count", {"counted": "-1"}, 422, "The count must be a whole number of units from 0"),
    ("count", {"counted": ""}, 422, "The count must be a whole number"),
    ("write-off", {"quantity": "5"}, 422, "Give the reason."),
    ("write-off", {"quantity": "x", "reason": "broken"}, 422, "The quantity must be a whole"),
    ("write-off", {"quantity": "51", "reason": "broken"}, 409, "more than the unreserved stock"),
    ("quarantine", {"reason": ""}, 422, "Give the reason."),
    ("release", {"reason": "checked"}, 409, "not quarantined"),
    ("move", {"location": "  "}, 422, "Give the new location."),
    ("move", {"location": "x" * 51}, 422, "at most 50 characters"),
])
def test_bad_batch_actions_are_readable_and_change_nothing(  # type: ignore[no-untyped-def]
        client, db, stock_world, action, fields, status, message) -> None:
    batch = _batch(db, stock_world)
    response = _act(client, batch.id, action, **fields)
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert message in page
    if action != "release":  # an available batch has no release form to fill in again
        for value in filter(None, fields.values()):
            assert f'value="{value}"' in page  # what was typed is still in the form
    db.session.refresh(batch)
    assert (batch.quantity_on_hand, batch.status) == (50, BatchStatus.AVAILABLE)


def test_unknown_batch_is_404_and_other_roles_are_refused(client, db, stock_world) -> None:  # type: ignore[no-untyped-def]
    batch = _batch(db, stock_world)
    assert client.get("/pharmacist/stock/batches/999999").status_code == 404
    assert _act(client, batch.id, "count", counted="1").status_code == 302  # pharmacist
    no_csrf = client.post(f"/pharmacist/stock/batches/{batch.id}/write-off",
                          data={"quantity": "1", "reason": "x"})
    assert no_csrf.status_code == 400
    client.post("/logout", data={"csrf_token": csrf_token(client, "/pharmacist/stock")})
    for role in (Role.PATIENT, Role.COURIER):
        user = UserFactory(role=role)
        db.session.commit()
        web_login(client, user.email, DEFAULT_PASSWORD)
        assert client.get("/pharmacist/stock/goods-in").status_code == 403
        assert client.get(f"/pharmacist/stock/batches/{batch.id}").status_code == 403
        token = csrf_token(client, "/login")
        assert client.post("/pharmacist/stock/goods-in", data={"csrf_token": token}).status_code \
            == 403
        assert client.post(f"/pharmacist/stock/batches/{batch.id}/write-off", data={
            "csrf_token": token, "quantity": "1", "reason": "x"}).status_code == 403
        client.post("/logout", data={"csrf_token": token})
    db.session.refresh(batch)
    assert batch.quantity_on_hand == 1


def test_a_controlled_drug_write_off_asks_for_the_witness(client, db, stock_world) -> None:  # type: ignore[no-untyped-def]
    batch = ledger.receive(db.session, pharmacy=stock_world["pharmacy"],
                           medicine=stock_world["morphine"], lot_number="M2",
                           expiry_date=date.today() + timedelta(days=100), quantity=10,
                           supplier="AAH", reference="DN-2", actor=stock_world["pharmacist"])
    db.session.commit()
    page = client.get(f"/pharmacist/stock/batches/{batch.id}").get_data(as_text=True)
    assert 'name="witness"' in page
    refused = _act(client, batch.id, "write-off", quantity="2", reason="expired")
    assert refused.status_code == 422
    assert "name of the authorised person who witnessed it" in refused.get_data(as_text=True)
    done = _act(client, batch.id, "write-off", quantity="2", reason="expired",
                witness="A. Inspector")
    assert done.status_code == 302
    entry = db.session.scalars(select(CDRegisterEntry).order_by(CDRegisterEntry.id)).all()[-1]
    assert (entry.kind.value, entry.quantity, entry.running_balance) == ("destruction", -2, 8)


def test_a_lot_is_recalled_from_its_batch_page_and_the_stock_page_lists_medicines(
        client, db, stock_world) -> None:  # type: ignore[no-untyped-def]
    stock = client.get("/pharmacist/stock").get_data(as_text=True)
    assert f'<option value="{stock_world["medicine"].id}">Sertraline 50mg tablets' in stock
    batch = _batch(db, stock_world)
    path = f"/pharmacist/stock/batches/{batch.id}"
    page = client.get(path).get_data(as_text=True)
    assert "Recall this lot" in page
    recalled = client.post("/pharmacist/recalls", data={
        "csrf_token": csrf_token(client, path), "medicine_id": str(batch.medicine_id),
        "lot_number": batch.lot_number, "reason": "MHRA class 2 recall"})
    assert recalled.status_code == 302
    assert recalled.headers["Location"].endswith(f"/pharmacist/recalls/{batch.id}")
    db.session.expire_all()
    assert db.session.get(StockBatch, batch.id).status is BatchStatus.RECALLED
    page = client.get(path).get_data(as_text=True)
    assert "Recall this lot" not in page and f"/pharmacist/recalls/{batch.id}" in page
    report = client.get(f"/pharmacist/recalls/{batch.id}").get_data(as_text=True)
    assert "Recall of Sertraline 50mg tablets, lot B1" in report
    assert "MHRA class 2 recall" in report and "Nobody has received this lot" in report
    other = ledger.receive(db.session, pharmacy=stock_world["pharmacy"],
                           medicine=stock_world["medicine"], lot_number="S2",
                           expiry_date=date.today() + timedelta(days=300), quantity=5,
                           supplier="AAH", reference="DN-7", actor=stock_world["pharmacist"])
    db.session.commit()
    assert client.get(f"/pharmacist/recalls/{other.id}").status_code == 404  # not recalled


def test_a_count_that_disagrees_with_the_cd_register_is_flagged_and_corrected_by_a_new_entry(  # type: ignore[no-untyped-def]
        client, db, stock_world) -> None:
    from pharmacy.models import CDRegister

    pharmacist = stock_world["pharmacist"]
    batch = ledger.receive(db.session, pharmacy=stock_world["pharmacy"],
                           medicine=stock_world["morphine"], lot_number="M3",
                           expiry_date=date.today() + timedelta(days=100), quantity=10,
                           supplier="AAH", reference="DN-3", actor=pharmacist)
    db.session.commit()
    register = db.session.scalar(select(CDRegister))
    receipt = register.entries[0]

    counted = _act(client, batch.id, "count", counted="9", note="one ampoule short")
    assert counted.status_code == 302
    page = client.get(counted.headers["Location"]).get_data(as_text=True)
    assert ("Morphine 10mg tablets is kept in the controlled-drug register, which now "
            "disagrees with the shelf: register 10, shelf 9.") in page
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "cd_register.discrepancy"))
    register_page = f"/pharmacist/cd-registers/{register.id}"
    shown = client.get(register_page).get_data(as_text=True)
    assert "Discrepancy: register 10, entries 10, physical stock 9." in shown
    assert "Record a correction" in shown and pharmacist.full_name in shown

    url = f"{register_page}/corrections"
    token = csrf_token(client, register_page)
    base = {"csrf_token": token, "entry_id": str(receipt.id), "direction": "remove",
            "quantity": "1", "reason": "ampoule broken in the safe, found in sharps bin"}
    for bad, message in (({"reason": ""}, "Give the reason."),
                         ({"quantity": "²"}, "The quantity must be a whole number"),
                         ({"direction": "sideways"}, "Say whether the correction adds"),
                         ({"entry_id": "999999"}, "Choose the entry of this register"),
                         ({"quantity": "11"}, "The register holds 10; 11 cannot be supplied.")):
        refused = client.post(url, data={**base, **bad})
        assert refused.status_code in (409, 422)
        assert message in refused.get_data(as_text=True)
    assert len(db.session.scalars(select(CDRegisterEntry)).all()) == 1

    done = client.post(url, data=base)
    assert done.status_code == 302
    shown = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "Correction entered as entry 2: balance 9." in shown
    assert "agrees with the entries and the stock on the shelf" in shown
    assert "(corrects #1)" in shown and "found in sharps bin" in shown
    entries = db.session.scalars(select(CDRegisterEntry).order_by(CDRegisterEntry.id)).all()
    assert [(e.kind.value, e.quantity, e.running_balance, e.corrects_entry_id)
            for e in entries] == [("receipt", 10, 10, None), ("correction", -1, 9, receipt.id)]
    assert client.post(url, data={**base, "csrf_token": "stale"}).status_code == 400
    assert len(db.session.scalars(select(CDRegisterEntry)).all()) == 2


def test_a_drafted_purchase_order_is_checked_changed_sent_and_cancelled(  # type: ignore[no-untyped-def]
        client, db, stock_world) -> None:
    from pharmacy.services import forecasting

    medicine, purchase = stock_world["medicine"], stock_world["purchase"]
    medicine.pack_size = 28
    purchase.status = PurchaseOrderStatus.DRAFT
    db.session.commit()
    url = f"/pharmacist/purchase-orders/{purchase.id}"
    listed = client.get("/pharmacist/purchase-orders").get_data(as_text=True)
    assert "PO-123" in listed and "draft" in listed
    page = client.get(url).get_data(as_text=True)
    assert "Sertraline 50mg tablets" in page and "Mark as sent to AAH" in page
    line = purchase.lines[0]
    token = csrf_token(client, url)

    for bad, status, message in (("30", 422, "whole packs of 28"), ("x", 422, "whole number"),
                                 ("0", 409, "only line: cancel the order instead")):
        refused = client.post(f"{url}/lines/{line.id}", data={"csrf_token": token,
                                                              "quantity": bad})
        assert refused.status_code == status
        assert message in refused.get_data(as_text=True)
    assert client.post(f"{url}/lines/999999", data={"csrf_token": token,
                                                    "quantity": "28"}).status_code == 404
    changed = client.post(f"{url}/lines/{line.id}", data={"csrf_token": token,
                                                          "quantity": "84"})
    assert changed.status_code == 302
    db.session.refresh(line)
    assert line.quantity == 84
    stock = forecasting.stock_inputs(db.session, stock_world["pharmacy"].id, [medicine.id])
    assert stock[medicine.id].on_order == 84

    assert client.post(f"{url}/send", data={"csrf_token": token}).status_code == 302
    assert client.post(f"{url}/send", data={"csrf_token": token}).status_code == 302  # again
    db.session.refresh(purchase)
    assert purchase.status is PurchaseOrderStatus.SENT
    locked = client.post(f"{url}/lines/{line.id}", data={"csrf_token": token, "quantity": "28"})
    assert locked.status_code == 409
    assert "Only a draft purchase order can be changed" in locked.get_data(as_text=True)

    no_reason = client.post(f"{url}/cancel", data={"csrf_token": token, "reason": " "})
    assert no_reason.status_code == 422
    cancelled = client.post(f"{url}/cancel", data={"csrf_token": token,
                                                   "reason": "wholesaler out of stock"})
    assert cancelled.status_code == 302
    page = client.get(cancelled.headers["Location"]).get_data(as_text=True)
    assert "no longer counts as stock on order" in page
    stock = forecasting.stock_inputs(db.session, stock_world["pharmacy"].id, [medicine.id])
    assert stock[medicine.id].on_order == 0
    assert "PO-123" not in client.get("/pharmacist/purchase-orders").get_data(as_text=True)
    assert "PO-123" in client.get("/pharmacist/purchase-orders?all=1").get_data(as_text=True)
    actions = [a for a in db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.entity_type == "purchase_order").order_by(AuditEvent.id))]
    assert actions == ["purchase_order.line_changed", "purchase_order.sent",
                       "purchase_order.cancelled"]
    assert client.get("/pharmacist/purchase-orders/999999").status_code == 404
