"""A parcel that comes back to the pharmacy (PostgreSQL): its units go back on the shelf,
except fridge medicines, which are written off (nobody can vouch for their temperature
once the parcel left), with the reason in the ledger and the audit trail; a packed order
cancelled before it left puts everything back."""

from __future__ import annotations

from sqlalchemy import select

from pharmacy.models import (
    AuditEvent,
    MovementKind,
    Order,
    OrderStatus,
    StockBatch,
    StockMovement,
    User,
)
from pharmacy.services import orders
from pharmacy.services.checkout import cancel_order
from tests.pharmacy.test_orders_api import _address, _auth, _slot, world  # noqa: F401


def _packed(client, db, world) -> tuple[int, dict[int, int]]:  # type: ignore[no-untyped-def]  # noqa: F811
    from pharmacy.models import Courier, Vehicle

    world["fridge"].prescription_only = False  # an insulin pen sold over the counter here
    courier = db.session.scalar(select(Courier))
    van = Vehicle(pharmacy_id=courier.pharmacy_id, registration="F1", capacity_parcels=40,
                  capacity_volume_l=500, has_fridge=True)
    db.session.add(van)
    db.session.flush()
    courier.default_vehicle_id = van.id  # a fridge van on the road
    db.session.commit()
    headers = _auth(client, world["patient"])
    placed = client.post("/api/v1/orders", json={
        "lines": [{"medicine_id": world["otc"].id, "quantity": 1},
                  {"medicine_id": world["fridge"].id, "quantity": 1}],
        "address_id": _address(db, world["patient"]),
        "slot_id": _slot(client, headers, fridge=True)}, headers=headers)
    assert placed.status_code == 201, placed.get_json()
    db.session.expire_all()
    order = db.session.get(Order, placed.get_json()["id"])
    on_hand = {b.medicine_id: b.quantity_on_hand for b in db.session.scalars(select(StockBatch))}
    order.status = OrderStatus.READY_TO_PICK  # paid for; the payment flow is tested elsewhere
    orders.pack(db.session, order, actor=db.session.get(User, world["pharmacist"].id))
    db.session.commit()
    return order.id, on_hand


def _on_hand(db) -> dict[int, int]:  # type: ignore[no-untyped-def]
    db.session.expire_all()
    return {b.medicine_id: b.quantity_on_hand for b in db.session.scalars(select(StockBatch))}


def test_a_parcel_back_from_the_road_puts_back_all_but_its_fridge_medicines(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    order_id, before = _packed(client, db, world)
    otc_id, fridge_id = world["otc"].id, world["fridge"].id
    pharmacist = db.session.get(User, world["pharmacist"].id)
    order = db.session.get(Order, order_id)
    for status in (OrderStatus.OUT_FOR_DELIVERY, OrderStatus.FAILED):
        orders.advance(db.session, order, status, actor=pharmacist)
    orders.advance(db.session, order, OrderStatus.RETURNED, actor=pharmacist, reason="not home")
    db.session.commit()
    after = _on_hand(db)
    assert after[otc_id] == before[otc_id]  # back on the shelf
    assert after[fridge_id] == before[fridge_id] - 5  # the pen pack went, written off
    kinds = [m.kind for m in db.session.scalars(select(StockMovement).join(StockBatch).where(
        StockBatch.medicine_id == fridge_id).order_by(StockMovement.id))]
    assert kinds[-2:] == [MovementKind.RETURNED, MovementKind.WRITTEN_OFF]
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "stock.written_off")).reason == orders.COLD_CHAIN_RETURN


def test_a_packed_order_cancelled_before_it_left_puts_everything_back(client, db, world) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    order_id, before = _packed(client, db, world)
    cancel_order(db.session, db.session.get(Order, order_id),
                 actor=db.session.get(User, world["pharmacist"].id), reason="changed mind")
    db.session.commit()
    assert _on_hand(db) == before


def test_a_rebooked_parcel_cancelled_later_has_left_the_pharmacy(client, db, world) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    order_id, before = _packed(client, db, world)
    pharmacist = db.session.get(User, world["pharmacist"].id)
    order = db.session.get(Order, order_id)
    for status in (OrderStatus.OUT_FOR_DELIVERY, OrderStatus.FAILED, OrderStatus.PACKED):
        orders.advance(db.session, order, status, actor=pharmacist)  # rebooked, then...
    cancel_order(db.session, order, actor=pharmacist, reason="no longer needed")
    db.session.commit()
    after = _on_hand(db)
    assert after[world["otc"].id] == before[world["otc"].id]
    assert after[world["fridge"].id] == before[world["fridge"].id] - 5
