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
from tests.pharmacy.helpers import web_login
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

    db.session.execute(migration.BACKFILL)
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(PrescriptionItem, item_id).quantity_owed == 8
