"""Withdrawing a prescription whose parcel is already on the road recalls the parcel
(PostgreSQL, localstripe, a planned and started route): the courier may not hand it over,
no other slot is offered, and the pharmacy refunds it in full when it is back."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from pharmacy.errors import Conflict, InvalidRequest
from pharmacy.models import (
    AuditEvent,
    DeliveryRoute,
    DeliverySlot,
    DeliveryStop,
    Notification,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    Prescription,
    PrescriptionItem,
    PrescriptionStatus,
    StockBatch,
    StopStatus,
    User,
)
from pharmacy.services import delivery, rebooking
from pharmacy.services import prescriptions as rx_service
from pharmacy.services.prescriptions import InvalidTransition
from tests.factories import DEFAULT_PASSWORD
from tests.payments.conftest import VISA
from tests.pharmacy.helpers import csrf_token, web_login
from tests.pharmacy.test_checkout_stripe import shopper  # noqa: F401
from tests.pharmacy.test_orders_api import _address, _slot, world  # noqa: F401


def _on_the_road(client, db, world, shopper, card, kind: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]  # noqa: F811
    """World's prescription item ordered, paid, packed and on a started route."""
    from pharmacy.jobs.deliveries import plan_wave

    item, courier_id, pharmacist_id = world["rx_item"], world["courier"].id, world["pharmacist"].id
    patient_email = world["patient"].email
    rx = db.session.get(Prescription, item.prescription_id)
    rx.prescription_type = kind
    db.session.commit()
    batch = db.session.scalar(select(StockBatch).where(StockBatch.medicine_id == item.medicine_id))
    on_hand, batch_id, rx_id, item_id = batch.quantity_on_hand, batch.id, rx.id, item.id
    placed = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": item.id}],
        "address_id": _address(db, world["patient"]),
        "slot_id": _slot(client, shopper["headers"]), "payment_method": card(VISA)},
        headers=shopper["headers"])
    assert placed.status_code == 201, placed.get_json()
    order_id = placed.get_json()["id"]
    shopper["move"](order_id, "packed")
    slot = db.session.get(DeliverySlot, db.session.get(Order, order_id).delivery_slot_id)
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    assert plan_wave(wave_id, 0) == wave_id
    route = db.session.scalars(select(DeliveryRoute)).one()
    courier = db.session.get(User, courier_id)
    delivery.start_route(db.session, route, actor=courier)
    db.session.commit()
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    assert order.status is OrderStatus.OUT_FOR_DELIVERY
    assert db.session.get(Prescription, rx_id).status is PrescriptionStatus.DISPENSED
    stop = db.session.scalar(select(DeliveryStop).where(DeliveryStop.order_id == order_id))
    return {"order_id": order_id, "rx_id": rx_id, "item_id": item_id, "stop_id": stop.id,
            "courier": courier, "batch_id": batch_id, "on_hand": on_hand,
            "pharmacist": db.session.get(User, pharmacist_id), "patient_email": patient_email}


def _actions(db, entity_id: int, entity_type: str = "order") -> list[str]:  # type: ignore[no-untyped-def]
    return list(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.entity_type == entity_type, AuditEvent.entity_id == str(entity_id))
        .order_by(AuditEvent.id)))


@pytest.mark.parametrize("kind", ["acute", "repeat"])
def test_a_withdrawn_parcel_on_the_road_is_recalled_brought_back_and_refunded(  # type: ignore[no-untyped-def]
        client, db, world, shopper, card, stripe_client, fast_routing, kind) -> None:  # noqa: F811
    road = _on_the_road(client, db, world, shopper, card, kind)
    pharmacist = road["pharmacist"]
    rx = db.session.get(Prescription, road["rx_id"])

    rx_service.withdraw(db.session, rx, pharmacist, "prescriber cancelled: wrong strength")
    db.session.commit()
    db.session.expire_all()
    order = db.session.get(Order, road["order_id"])
    assert order.status is OrderStatus.OUT_FOR_DELIVERY  # still in the van...
    assert order.recalled_at is not None and "wrong strength" in order.recall_reason
    assert "order.recalled" in _actions(db, order.id)
    assert db.session.get(Prescription, road["rx_id"]).status is PrescriptionStatus.CANCELLED
    told = db.session.scalar(select(Notification).where(
        Notification.kind == "prescription.withdrawn").order_by(Notification.id.desc()))
    assert "will not be delivered" in told.body and "refunded" in told.body

    # ...and the courier may not hand it over, on the page or by the service.
    web_login(client, road["courier"].email, DEFAULT_PASSWORD)
    page = client.get(f"/courier/stops/{road['stop_id']}").get_data(as_text=True)
    assert "Do not hand this parcel over" in page and "wrong strength" in page
    assert 'data-action="delivered"' not in page
    token = csrf_token(client, f"/courier/stops/{road['stop_id']}")
    refused = client.post(f"/courier/stops/{road['stop_id']}/actions", data={
        "csrf_token": token, "action": "delivered", "client_action_id": "hand-over",
        "recipient_name": "A Patient", "signature": "data:image/png;base64,AAAA"})
    assert refused.status_code == 409 and "recalled" in refused.get_json()["error"]
    brought = client.post(f"/courier/stops/{road['stop_id']}/actions", data={
        "csrf_token": token, "action": "failed", "client_action_id": "bring-back",
        "failure_reason": "recalled"})
    assert brought.status_code == 200, brought.get_json()
    db.session.expire_all()
    order = db.session.get(Order, road["order_id"])
    assert order.status is OrderStatus.FAILED
    assert rebooking.rebook_reason(db.session, order) is None  # no new slot is offered
    assert db.session.scalar(select(func.count(Notification.id)).where(
        Notification.kind == "delivery.rebook")) == 0
    with pytest.raises(rebooking.NotRebookable, match="recalled"):
        rebooking.rebook_delivery(db.session, order, order.delivery_slot_id + 1, actor=None)
    db.session.rollback()

    # The pharmacist receives it back: refunded in full at Stripe, units back on the books.
    client.get("/logout")
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    listed = client.get("/pharmacist/recalled-parcels").get_data(as_text=True)
    assert order.reference in listed and "wrong strength" in listed
    token = csrf_token(client, "/pharmacist/recalled-parcels")
    for _ in range(2):  # a double click changes nothing more
        received = client.post(f"/pharmacist/recalled-parcels/{order.id}/received",
                               data={"csrf_token": token})
        assert received.status_code == 302
    db.session.expire_all()
    order = db.session.get(Order, road["order_id"])
    assert order.status is OrderStatus.REFUNDED
    payment = db.session.scalar(select(Payment).where(Payment.order_id == order.id))
    assert payment.status is PaymentStatus.REFUNDED
    assert payment.amount_refunded_minor == payment.amount_captured_minor > 0
    refunds = stripe_client.v1.refunds.list({"payment_intent": payment.provider_payment_id})
    assert sum(r.amount for r in refunds.data) == payment.amount_captured_minor
    assert db.session.get(StockBatch, road["batch_id"]).quantity_on_hand == road["on_hand"]
    assert db.session.get(PrescriptionItem, road["item_id"]).supplied_at is None
    assert db.session.get(Prescription, road["rx_id"]).status is PrescriptionStatus.CANCELLED
    assert db.session.scalar(select(func.count(Notification.id)).where(
        Notification.kind == "order.recall_refunded")) == 1
    assert f"<td>{order.reference}</td>" not in client.get(
        "/pharmacist/recalled-parcels").get_data(as_text=True)
    trail = _actions(db, order.id)
    assert trail.count("order.refunded") == 1 and trail.index("order.recalled") < trail.index(
        "order.failed") < trail.index("order.returned") < trail.index("order.refunded")


def test_a_recalled_parcel_received_without_a_word_from_the_courier_closes_its_stop(  # type: ignore[no-untyped-def]
        client, db, world, shopper, card, fast_routing) -> None:  # noqa: F811
    from pharmacy.services import checkout

    road = _on_the_road(client, db, world, shopper, card, "acute")
    pharmacist = road["pharmacist"]
    rx_service.withdraw(db.session, db.session.get(Prescription, road["rx_id"]), pharmacist,
                        "allergy found after dispensing")
    db.session.commit()
    web_login(client, road["patient_email"], DEFAULT_PASSWORD)
    page = client.get(f"/patient/orders/{road['order_id']}").get_data(as_text=True)
    assert "it will not be delivered" in page and "refund it in full" in page
    order = db.session.get(Order, road["order_id"])
    checkout.receive_recalled(db.session, order, actor=pharmacist)
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Order, road["order_id"]).status is OrderStatus.REFUNDED
    stop = db.session.get(DeliveryStop, road["stop_id"])
    assert stop.status is StopStatus.FAILED and stop.completed_at is not None
    assert "delivery.brought_back" in _actions(db, stop.id, "delivery_stop")
    with pytest.raises(Conflict, match="already failed"):
        delivery.record_action(db.session, road["courier"], stop.id, action="delivered",
                               client_action_id="late", recipient_name="X")


def test_only_a_recalled_parcel_is_brought_back_as_recalled_and_a_delivered_one_is_not_withdrawn(  # type: ignore[no-untyped-def]
        client, db, world, shopper, card, fast_routing) -> None:  # noqa: F811
    road = _on_the_road(client, db, world, shopper, card, "acute")
    courier = road["courier"]
    with pytest.raises(InvalidRequest, match="not been recalled"):
        delivery.record_action(db.session, courier, road["stop_id"], action="failed",
                               client_action_id="sneaky", failure_reason="recalled")
    db.session.rollback()
    delivery.record_action(db.session, courier, road["stop_id"], action="delivered",
                           client_action_id="ok", recipient_name="A Patient",
                           signature_png="data:image/png;base64,"
                           "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
                           "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    db.session.commit()
    rx = db.session.get(Prescription, road["rx_id"])
    assert rx_service.undelivered_orders(db.session, rx) == []
    with pytest.raises(InvalidTransition, match="dispensed cannot become cancelled"):
        rx_service.withdraw(db.session, rx, road["pharmacist"], "too late")


def test_withdrawing_a_dispensed_acute_prescription_pulls_its_packed_parcel(  # type: ignore[no-untyped-def]
        client, db, world, shopper, card) -> None:  # noqa: F811
    item = world["rx_item"]
    rx_id, item_id, pharmacist_id = item.prescription_id, item.id, world["pharmacist"].id
    db.session.get(Prescription, rx_id).prescription_type = "acute"
    db.session.commit()
    placed = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": item_id}],
        "address_id": _address(db, world["patient"]),
        "slot_id": _slot(client, shopper["headers"]), "payment_method": card(VISA)},
        headers=shopper["headers"])
    order_id = placed.get_json()["id"]
    shopper["move"](order_id, "packed")
    db.session.expire_all()
    rx = db.session.get(Prescription, rx_id)
    assert rx.status is PrescriptionStatus.DISPENSED
    assert [o.id for o in rx_service.undelivered_orders(db.session, rx)] == [order_id]
    rx_service.withdraw(db.session, rx, db.session.get(User, pharmacist_id), "duplicate")
    db.session.commit()
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    assert order.status is OrderStatus.CANCELLED and order.recalled_at is None
    assert db.session.get(Prescription, rx_id).status is PrescriptionStatus.CANCELLED
    assert db.session.get(PrescriptionItem, item_id).supplied_at is None
    payment = db.session.scalar(select(Payment).where(Payment.order_id == order_id))
    assert payment.status is PaymentStatus.CANCELLED  # the card hold is voided
