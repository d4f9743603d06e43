"""No overselling and no double orders, on PostgreSQL with real concurrent transactions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from pharmacy.errors import DomainError
from pharmacy.models import (
    DeliverySlot,
    Order,
    OrderStatus,
    Role,
    StockBatch,
    StockMovement,
)
from pharmacy.services import orders
from tests.factories import MedicineFactory, PharmacyFactory, UserFactory
from tests.pharmacy.helpers import shopper

PRICING = orders.Pricing()


@pytest.fixture()
def shop(db):  # type: ignore[no-untyped-def]
    pharmacy = PharmacyFactory()
    medicine = MedicineFactory(prescription_only=False, pack_size=1, unit_price_minor=250)
    batch = StockBatch(pharmacy_id=pharmacy.id, medicine=medicine, lot_number="L1",
                       expiry_date=date.today() + timedelta(days=400), quantity_on_hand=50)
    db.session.add(batch)
    db.session.add(StockMovement(batch=batch, kind="received", on_hand_change=50))
    user, patient, address, slot = shopper(db, pharmacy, slot_capacity=1000)
    return {"patient_id": patient.id, "user_id": user.id, "medicine_id": medicine.id,
            "address_id": address.id, "slot_id": slot.id, "batch_id": batch.id}


def _checkout(app: Flask, shop: dict[str, int], key: str | None = None) -> int | str:
    from pharmacy.extensions import db
    from pharmacy.models import PatientProfile, User

    with app.app_context():
        try:
            patient = db.session.get(PatientProfile, shop["patient_id"])
            user = db.session.get(User, shop["user_id"])
            placed = orders.place_order(
                db.session, patient, orders.OrderRequest(
                    lines=[orders.LineRequest(medicine_id=shop["medicine_id"], quantity=1)],
                    address_id=shop["address_id"], slot_id=shop["slot_id"]),
                actor=user, pricing=PRICING, idempotency_key=key)
            db.session.commit()
            return placed.order.id
        except DomainError as err:
            db.session.rollback()
            return err.code
        finally:
            db.session.remove()


def test_200_concurrent_checkouts_for_50_units_sell_exactly_50(app: Flask, db, shop) -> None:  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: _checkout(app, shop), range(200)))
    placed = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if not isinstance(r, int)]
    assert len(placed) == 50
    assert set(refused) == {"out_of_stock"}
    db.session.expire_all()
    batch = db.session.get(StockBatch, shop["batch_id"])
    assert batch.quantity_on_hand == 50 and batch.quantity_reserved == 50
    assert batch.quantity_available == 0
    ledger_on_hand, ledger_reserved = db.session.execute(
        select(func.sum(StockMovement.on_hand_change), func.sum(StockMovement.reserved_change))
        .where(StockMovement.batch_id == batch.id)).one()
    assert (ledger_on_hand, ledger_reserved) == (50, 50)
    slot = db.session.get(DeliverySlot, shop["slot_id"])
    assert slot.booked == 50  # the refused checkouts gave their slot place back (rollback)

    # Packing takes the units off the shelf; stock reaches zero and never below.
    actor = UserFactory(role=Role.PHARMACIST)
    for order in db.session.scalars(select(Order)).all():
        order.status = OrderStatus.READY_TO_PICK
        orders.pack(db.session, order, actor=actor)
    db.session.commit()
    db.session.expire_all()
    batch = db.session.get(StockBatch, shop["batch_id"])
    assert (batch.quantity_on_hand, batch.quantity_reserved) == (0, 0)
    assert db.session.scalar(select(func.sum(StockMovement.on_hand_change)).where(
        StockMovement.batch_id == batch.id)) == 0


def test_ten_concurrent_replays_of_one_key_make_one_order(app: Flask, db, shop) -> None:  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(lambda _: _checkout(app, shop, key="key-123"), range(10)))
    assert len(set(results)) == 1 and isinstance(results[0], int)
    assert db.session.scalar(select(func.count(Order.id))) == 1
    db.session.expire_all()
    assert db.session.get(StockBatch, shop["batch_id"]).quantity_reserved == 1


def test_same_key_different_body_is_refused(app: Flask, db, shop) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(_checkout(app, shop, key="k"), int)
    other = dict(shop)
    with app.app_context():
        from pharmacy.extensions import db as _db

        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
        slot = DeliverySlot(pharmacy_id=_db.session.get(DeliverySlot, shop["slot_id"]).pharmacy_id,
                            starts_at=start, ends_at=start + timedelta(hours=2),
                            cutoff_at=start - timedelta(hours=2), capacity=5, fridge_capacity=0)
        _db.session.add(slot)
        _db.session.commit()
        other["slot_id"] = slot.id
        _db.session.remove()
    assert _checkout(app, other, key="k") == "idempotency_key_reused"


def test_cancel_gives_stock_and_slot_back(app: Flask, db, shop) -> None:  # type: ignore[no-untyped-def]
    order_id = _checkout(app, shop)
    order = db.session.get(Order, order_id)
    orders.cancel(db.session, order, actor=None, reason="changed my mind")
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(StockBatch, shop["batch_id"]).quantity_reserved == 0
    assert db.session.get(DeliverySlot, shop["slot_id"]).booked == 0
    with pytest.raises(orders.InvalidOrderTransition):
        orders.advance(db.session, db.session.get(Order, order_id), OrderStatus.PACKED,
                       actor=None)
    db.session.rollback()


def test_fefo_skips_batches_that_expire_during_the_course(app: Flask, db, shop) -> None:  # type: ignore[no-untyped-def]
    soon = StockBatch(pharmacy_id=db.session.get(StockBatch, shop["batch_id"]).pharmacy_id,
                      medicine_id=shop["medicine_id"], lot_number="SOON",
                      expiry_date=date.today() + timedelta(days=10), quantity_on_hand=100)
    mid = StockBatch(pharmacy_id=soon.pharmacy_id, medicine_id=shop["medicine_id"],
                     lot_number="MID", expiry_date=date.today() + timedelta(days=90),
                     quantity_on_hand=100)
    db.session.add_all([soon, mid])
    db.session.commit()
    order_id = _checkout(app, shop)
    order = db.session.get(Order, order_id)
    assert [a.batch_id for a in order.lines[0].allocations] == [mid.id]


def test_unpaid_orders_past_their_hold_are_released_by_the_job(app: Flask, db, shop) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.jobs.orders import release_unpaid_orders

    order_id = _checkout(app, shop)
    fresh_id = _checkout(app, shop)
    order = db.session.get(Order, order_id)
    order.reserved_until = datetime.now(UTC) - timedelta(minutes=1)
    db.session.commit()
    assert release_unpaid_orders() == 1
    assert release_unpaid_orders() == 0  # nothing left: safe to rerun
    db.session.expire_all()
    assert db.session.get(Order, order_id).status is OrderStatus.CANCELLED
    assert db.session.get(Order, fresh_id).status is OrderStatus.PLACED
    assert db.session.get(StockBatch, shop["batch_id"]).quantity_reserved == 1
