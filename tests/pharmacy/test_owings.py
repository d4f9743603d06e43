"""Owings (PostgreSQL): an item supplied short owes the patient the balance, which can be
ordered against the same item, charged only the share of the charge not yet paid, until
it is all supplied; undoing a supply puts back what is owed."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from pharmacy.errors import Conflict
from pharmacy.models import (
    AuditEvent,
    Order,
    OrderStatus,
    PrescriptionItem,
    PrescriptionStatus,
    User,
)
from pharmacy.services import basket, orders
from pharmacy.services.checkout import cancel_order
from tests.factories import DEFAULT_PASSWORD
from tests.pharmacy.helpers import csrf_token, web_login
from tests.pharmacy.test_orders_api import _address, _auth, _slot, world  # noqa: F401
from tests.pharmacy.test_repeat_items import _today

CHARGE = orders.Pricing().prescription_charge_minor


def _place(client, db, world, item_id: int):  # type: ignore[no-untyped-def]  # noqa: F811
    headers = _auth(client, world["patient"])
    return client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": item_id}],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, headers)},
        headers=headers)


def _paid_and_packed(db, order_id: int, pharmacist_id: int, supplied: int | None = None) -> Order:  # type: ignore[no-untyped-def]
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    orders.mark_paid(db.session, order, actor=None)  # the card flow is tested elsewhere
    assert order.status is OrderStatus.READY_TO_PICK  # no second verification for an owing
    line = order.lines[0]
    orders.pack(db.session, order, actor=db.session.get(User, pharmacist_id),
                supplied=None if supplied is None else {line.id: supplied})
    db.session.commit()
    return order


def test_a_short_supply_owes_the_balance_which_is_ordered_and_supplied_on_the_same_item(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    item_id, pharmacist_id = world["rx_item"].id, world["pharmacist"].id
    first = _place(client, db, world, item_id)
    assert first.status_code == 201, first.get_json()
    order = _paid_and_packed(db, first.get_json()["id"], pharmacist_id, supplied=20)
    item = db.session.get(PrescriptionItem, item_id)
    assert item.quantity_owed == 8 and item.supplied_at is not None
    assert item.prescription.status is PrescriptionStatus.DISPENSED  # dispensed, with an owing
    assert order.lines[0].line_total_minor == CHARGE * 20 // 28
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "prescription.item_owing")).after["quantity_owed"] == 8

    row = next(r for r in basket.my_medicines(db.session, world["patients"][0], _today())
               if r.item.id == item_id)
    assert row.orderable_now and row.owed == 8
    web_login(client, world["patient"].email, DEFAULT_PASSWORD)
    page = client.get("/patient/medicines").get_data(as_text=True)
    assert "We still owe you 8" in page and "Add the 8 owed to basket" in page
    owing = _place(client, db, world, item_id)
    assert owing.status_code == 201, owing.get_json()
    line = owing.get_json()["lines"][0]
    assert line["quantity"] == 8
    assert line["line_total_minor"] + CHARGE * 20 // 28 == CHARGE  # the charge, once
    again = _place(client, db, world, item_id)
    assert again.status_code == 422  # the owing is on an order already

    _paid_and_packed(db, owing.get_json()["id"], pharmacist_id)
    item = db.session.get(PrescriptionItem, item_id)
    assert item.quantity_owed == 0
    assert _place(client, db, world, item_id).status_code == 422  # nothing more to supply
    row = next(r for r in basket.my_medicines(db.session, world["patients"][0], _today())
               if r.item.id == item_id)
    assert not row.orderable_now and row.owed == 0


def test_undoing_supplies_puts_back_what_is_owed(client, db, world) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    item_id, pharmacist_id = world["rx_item"].id, world["pharmacist"].id
    first = _paid_and_packed(db, _place(client, db, world, item_id).get_json()["id"],
                             pharmacist_id, supplied=20)
    first_id = first.id
    owing = _paid_and_packed(db, _place(client, db, world, item_id).get_json()["id"],
                             pharmacist_id, supplied=5)
    assert db.session.get(PrescriptionItem, item_id).quantity_owed == 3
    pharmacist = db.session.get(User, pharmacist_id)
    cancel_order(db.session, owing, actor=pharmacist, reason="parcel damaged")
    db.session.commit()
    assert db.session.get(PrescriptionItem, item_id).quantity_owed == 8  # 5 owed again

    # With an owing order waiting, the first supply is undone: nothing is owed any more,
    # the item can be ordered whole again, and the waiting owing cannot be packed.
    waiting = _place(client, db, world, item_id)
    assert waiting.status_code == 201
    cancel_order(db.session, db.session.get(Order, first_id), actor=pharmacist,
                 reason="wrong address")
    db.session.commit()
    item = db.session.get(PrescriptionItem, item_id)
    assert item.quantity_owed == 0 and item.supplied_at is None
    assert item.prescription.status is PrescriptionStatus.VERIFIED
    order = db.session.get(Order, waiting.get_json()["id"])
    order.status = OrderStatus.READY_TO_PICK
    with pytest.raises(Conflict, match="only 0 units are owed"):
        orders.pack(db.session, order, actor=pharmacist)
    db.session.rollback()


def test_an_item_packed_with_nothing_supplied_is_not_owed_but_ordered_whole_again(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    item_id, pharmacist_id = world["rx_item"].id, world["pharmacist"].id
    _paid_and_packed(db, _place(client, db, world, item_id).get_json()["id"], pharmacist_id,
                     supplied=0)
    item = db.session.get(PrescriptionItem, item_id)
    assert item.quantity_owed == 0 and item.supplied_at is None
    placed = _place(client, db, world, item_id)
    assert placed.status_code == 201, placed.get_json()  # the whole item, at the whole charge
    assert placed.get_json()["lines"][0]["quantity"] == 28
    assert placed.get_json()["lines"][0]["line_total_minor"] == CHARGE


def test_migration_0017_owes_the_balance_of_items_supplied_short_before_it(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0017_owings.py"
    spec = importlib.util.spec_from_file_location("migration_0017", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    item_id, pharmacist_id = world["rx_item"].id, world["pharmacist"].id
    _paid_and_packed(db, _place(client, db, world, item_id).get_json()["id"], pharmacist_id,
                     supplied=20)
    db.session.execute(PrescriptionItem.__table__.update().values(quantity_owed=0))
    db.session.commit()  # as a row supplied short before the revision

    db.session.execute(migration.BACKFILL, {"since": migration.backfill_since()})
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(PrescriptionItem, item_id).quantity_owed == 8


def _delivered_short(client, db, world, supplied: int = 20) -> int:  # type: ignore[no-untyped-def]  # noqa: F811
    """World's item ordered and packed short, then delivered (the parcel reached the patient)."""
    item_id, pharmacist_id = world["rx_item"].id, world["pharmacist"].id
    order = _paid_and_packed(db, _place(client, db, world, item_id).get_json()["id"],
                             pharmacist_id, supplied=supplied)
    order.status = OrderStatus.DELIVERED  # out and delivered; those steps are tested elsewhere
    db.session.commit()
    return item_id


@pytest.mark.parametrize("kind", ["repeat", "acute"])
def test_withdrawing_a_prescription_ends_what_is_owed_on_it(client, db, world, kind) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from pharmacy.services import prescriptions as rx_service

    item = world["rx_item"]
    db.session.get(type(item.prescription), item.prescription_id).prescription_type = kind
    db.session.commit()
    item_id = _delivered_short(client, db, world)
    rx = db.session.get(PrescriptionItem, item_id).prescription
    assert rx.status is PrescriptionStatus.DISPENSED and rx.items[0].quantity_owed == 8
    # Dispensed and delivered, but the balance is still to come: withdrawing stops it.
    rx_service.withdraw(db.session, rx, db.session.get(User, world["pharmacist"].id),
                        "prescriber stopped it")
    db.session.commit()
    db.session.expire_all()
    item = db.session.get(PrescriptionItem, item_id)
    assert item.quantity_owed == 0
    assert item.prescription.status is (PrescriptionStatus.CANCELLED if kind == "acute"
                                        else PrescriptionStatus.DISPENSED)
    assert _place(client, db, world, item_id).status_code == 422
    row = [r for r in basket.my_medicines(db.session, world["patients"][0], _today())
           if r.item.id == item_id]
    assert not row or not row[0].orderable_now


def test_concurrent_orders_for_one_owing_place_exactly_one(app, client, db, world) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from concurrent.futures import ThreadPoolExecutor

    from pharmacy.errors import DomainError
    from pharmacy.extensions import db as ext_db
    from pharmacy.models import PatientProfile

    item_id = _delivered_short(client, db, world)
    patient_id, user_id = world["patients"][0].id, world["patient"].id
    address_id = _address(db, world["patient"])
    slot_id = _slot(client, _auth(client, world["patient"]))

    def checkout(_: int) -> int | str:
        with app.app_context():
            try:
                placed = orders.place_order(
                    ext_db.session, ext_db.session.get(PatientProfile, patient_id),
                    orders.OrderRequest(lines=[orders.LineRequest(prescription_item_id=item_id)],
                                        address_id=address_id, slot_id=slot_id),
                    actor=ext_db.session.get(User, user_id), pricing=orders.Pricing())
                ext_db.session.commit()
                return placed.order.id
            except DomainError as err:
                ext_db.session.rollback()
                return err.code
            finally:
                ext_db.session.remove()

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(checkout, range(6)))
    assert sum(isinstance(r, int) for r in results) == 1, results


def test_a_new_repeat_issue_ends_what_the_last_one_owed(client, db, world) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from datetime import timedelta

    from pharmacy.services import prescriptions as rx_service
    from tests.pharmacy.test_repeat_items import _batch

    rx = _batch(db, world["patients"][0], [(world["rx_item"].medicine_id, 28)])
    item_id = rx.items[0].id
    order = _paid_and_packed(db, _place(client, db, world, item_id).get_json()["id"],
                             world["pharmacist"].id, supplied=20)
    order.status = OrderStatus.DELIVERED
    item = db.session.get(PrescriptionItem, item_id)
    assert item.quantity_owed == 8
    item.supplied_at -= timedelta(days=25)  # the next issue is due
    db.session.commit()
    status, issue = rx_service.request_repeat(db.session, world["patients"][0], item_id,
                                              actor=db.session.get(User, world["patient"].id))
    db.session.commit()
    assert issue is not None, status.reason
    assert db.session.get(PrescriptionItem, item_id).quantity_owed == 0
    assert _place(client, db, world, item_id).status_code == 422


def test_a_pharmacist_ends_an_owing_supplied_at_the_counter(client, db, world) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    item_id = _delivered_short(client, db, world)
    rx_id = db.session.get(PrescriptionItem, item_id).prescription_id
    pharmacist = db.session.get(User, world["pharmacist"].id)
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    page = client.get(f"/pharmacist/prescriptions/{rx_id}").get_data(as_text=True)
    assert "8 owed" in page and "End the owing" in page
    token = csrf_token(client, f"/pharmacist/prescriptions/{rx_id}")
    url = f"/pharmacist/prescriptions/{rx_id}/end-owing"
    assert client.post(url, data={"csrf_token": token, "item_id": str(item_id),
                                  "owing-reason": ""}).status_code == 422
    done = client.post(url, data={"csrf_token": token, "item_id": str(item_id),
                                  "owing-reason": "Gave the 8 at the counter"})
    assert done.status_code == 302
    db.session.expire_all()
    assert db.session.get(PrescriptionItem, item_id).quantity_owed == 0
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "prescription.item_owing",
        AuditEvent.reason == "Gave the 8 at the counter")) is not None


def test_cancelling_the_first_supply_then_its_owing_leaves_nothing_supplied(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    item_id, pharmacist_id = world["rx_item"].id, world["pharmacist"].id
    first_id = _paid_and_packed(db, _place(client, db, world, item_id).get_json()["id"],
                                pharmacist_id, supplied=20).id
    owing_id = _paid_and_packed(db, _place(client, db, world, item_id).get_json()["id"],
                                pharmacist_id).id
    pharmacist = db.session.get(User, pharmacist_id)
    cancel_order(db.session, db.session.get(Order, first_id), actor=pharmacist, reason="x")
    db.session.commit()
    item = db.session.get(PrescriptionItem, item_id)
    assert item.quantity_owed == 20 and item.supplied_at is not None  # the 8 still stand
    cancel_order(db.session, db.session.get(Order, owing_id), actor=pharmacist, reason="y")
    db.session.commit()
    db.session.expire_all()
    item = db.session.get(PrescriptionItem, item_id)
    assert item.quantity_owed == 0 and item.supplied_at is None  # nothing reached anyone
    assert item.prescription.status is PrescriptionStatus.VERIFIED
    placed = _place(client, db, world, item_id)
    assert placed.status_code == 201 and placed.get_json()["lines"][0]["quantity"] == 28


def test_a_one_off_prescription_is_ordered_from_my_medicines_and_so_is_what_it_owes(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    """An acute prescription has no repeats: it is listed while it can be had (ordered whole,
    or its owing after a short supply) and leaves the list once it is all supplied."""
    item_id, pharmacist_id = world["rx_item"].id, world["pharmacist"].id
    db.session.get(PrescriptionItem, item_id).prescription.prescription_type = "acute"
    db.session.commit()
    patient = world["patients"][0]

    def row():  # type: ignore[no-untyped-def]
        db.session.expire_all()
        return next((r for r in basket.my_medicines(db.session, patient, _today())
                     if r.item.id == item_id), None)

    listed = row()
    assert listed is not None and listed.one_off and listed.orderable_now and not listed.owed
    web_login(client, world["patient"].email, DEFAULT_PASSWORD)
    page = client.get("/patient/medicines").get_data(as_text=True)
    assert "One-off prescription" in page and f'value="rx:{item_id}"' in page
    first = _place(client, db, world, item_id)
    assert first.status_code == 201, first.get_json()
    waiting = row()
    assert waiting is not None and waiting.on_order and not waiting.orderable_now
    _paid_and_packed(db, first.get_json()["id"], pharmacist_id, supplied=20)
    owed = row()
    assert owed is not None and owed.orderable_now and owed.owed == 8
    assert "We still owe you 8" in client.get("/patient/medicines").get_data(as_text=True)
    owing = _place(client, db, world, item_id)
    assert owing.status_code == 201, owing.get_json()
    _paid_and_packed(db, owing.get_json()["id"], pharmacist_id)
    assert row() is None  # all supplied: nothing left to order
    assert f'value="rx:{item_id}"' not in client.get("/patient/medicines").get_data(
        as_text=True)


def test_an_item_the_checkout_cannot_take_says_to_call_instead_of_offering_the_basket(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    from decimal import Decimal

    item = db.session.get(PrescriptionItem, world["rx_item"].id)
    item.quantity = Decimal("12.5")  # not whole units: a pharmacist sets it up
    db.session.commit()
    row = next(r for r in basket.my_medicines(db.session, world["patients"][0], _today())
               if r.item.id == item.id)
    assert row.needs_call and not row.orderable_now
    web_login(client, world["patient"].email, DEFAULT_PASSWORD)
    page = client.get("/patient/medicines").get_data(as_text=True)
    assert "Call us to order this one" in page and f'value="rx:{item.id}"' not in page
    assert _place(client, db, world, item.id).status_code == 422  # as the checkout says
