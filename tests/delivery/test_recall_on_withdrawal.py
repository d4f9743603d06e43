"""Withdrawing a prescription whose parcel is already on the road recalls the parcel
(PostgreSQL, localstripe, a planned and started route): the courier may not hand it over,
no other slot is offered, and the pharmacy refunds it in full when it is back."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
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
from tests.factories import DEFAULT_PASSWORD, MedicineFactory
from tests.payments.conftest import VISA
from tests.pharmacy.helpers import csrf_token, web_login
from tests.pharmacy.test_checkout_stripe import shopper  # noqa: F401
from tests.pharmacy.test_orders_api import _address, _slot, world  # noqa: F401


def _on_the_road(client, db, world, shopper, card, kind: str, *,  # type: ignore[no-untyped-def]  # noqa: F811
                 with_acute: bool = False) -> dict[str, Any]:
    """World's prescription item ordered, paid, packed and on a started route (with an
    item of a second, acute prescription in the same parcel if ``with_acute``)."""
    from pharmacy.jobs.deliveries import plan_wave

    item, courier_id, pharmacist_id = world["rx_item"], world["courier"].id, world["pharmacist"].id
    patient_email, patient_user_id = world["patient"].email, world["patient"].id
    rx = db.session.get(Prescription, item.prescription_id)
    rx.prescription_type = kind
    lines = [{"prescription_item_id": item.id}]
    acute_id = None
    if with_acute:
        other = MedicineFactory(name="Naproxen 500mg tablets", pack_size=28)
        db.session.add(StockBatch(pharmacy_id=rx.patient.nominated_pharmacy_id,
                                  medicine=other, lot_number="LNAP", quantity_on_hand=100,
                                  expiry_date=date.today() + timedelta(days=400)))
        acute = Prescription(prescription_id="RX-ACUTE", patient_id=rx.patient_id,
                             status=PrescriptionStatus.VERIFIED, prescription_type="acute",
                             source_bundle={"resourceType": "Bundle"})
        acute.items.append(PrescriptionItem(line_id="1", medicine=other,
                                            medication_code=other.code,
                                            medication_display=other.name,
                                            quantity=Decimal(28), supply_duration_days=14))
        db.session.add(acute)
        db.session.flush()
        acute_id = acute.id
        lines.append({"prescription_item_id": acute.items[0].id})
    db.session.commit()
    batch = db.session.scalar(select(StockBatch).where(StockBatch.medicine_id == item.medicine_id))
    on_hand, batch_id, rx_id, item_id = batch.quantity_on_hand, batch.id, rx.id, item.id
    placed = client.post("/api/v1/orders", json={
        "lines": lines,
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
            "pharmacist": db.session.get(User, pharmacist_id), "patient_email": patient_email,
            "acute_id": acute_id, "patient_user_id": patient_user_id}


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
                               data={"csrf_token": token, "checked": "yes"})
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
    with pytest.raises(InvalidRequest, match="sealed parcel"):
        checkout.receive_recalled(db.session, order, actor=pharmacist, checked=False)
    checkout.receive_recalled(db.session, order, actor=pharmacist, checked=True)
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


def test_a_repeat_issue_in_a_parcel_already_recalled_is_withdrawn_and_stays_withdrawn(  # type: ignore[no-untyped-def]
        client, db, world, shopper, card, fast_routing) -> None:  # noqa: F811
    from pharmacy.services import checkout

    road = _on_the_road(client, db, world, shopper, card, "repeat", with_acute=True)
    pharmacist = road["pharmacist"]
    rx_service.withdraw(db.session, db.session.get(Prescription, road["acute_id"]), pharmacist,
                        "interaction found")
    db.session.commit()
    issue = db.session.get(Prescription, road["rx_id"])
    assert issue.status is PrescriptionStatus.DISPENSED
    assert [o.id for o in rx_service.undelivered_orders(db.session, issue)] == [road["order_id"]]
    # The repeat on the same parcel is withdrawn too while the parcel is on its way back.
    rx_service.withdraw(db.session, issue, pharmacist, "prescriber stopped it")
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Prescription, road["rx_id"]).status is PrescriptionStatus.CANCELLED
    order = db.session.get(Order, road["order_id"])
    checkout.receive_recalled(db.session, order, actor=pharmacist, checked=True)
    db.session.commit()
    db.session.expire_all()
    # Receiving it back undoes its supply, but reopens neither prescription.
    assert db.session.get(Prescription, road["rx_id"]).status is PrescriptionStatus.CANCELLED
    assert db.session.get(Prescription, road["acute_id"]).status is PrescriptionStatus.CANCELLED
    again = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": road["item_id"]}],
        "address_id": _address(db, db.session.get(User, road["patient_user_id"])),
        "slot_id": _slot(client, shopper["headers"])}, headers=shopper["headers"])
    assert again.status_code == 422


def test_a_delivery_recorded_offline_before_the_recall_stands_and_is_followed_up(  # type: ignore[no-untyped-def]
        client, db, world, shopper, card, fast_routing) -> None:  # noqa: F811
    from datetime import UTC, datetime

    road = _on_the_road(client, db, world, shopper, card, "acute")
    handed_over = datetime.now(UTC)  # the phone was offline: the action is queued
    rx_service.withdraw(db.session, db.session.get(Prescription, road["rx_id"]),
                        road["pharmacist"], "wrong patient")
    db.session.commit()
    signature = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlE"
                 "QVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    with pytest.raises(Conflict, match="recalled"):  # recorded after the recall: refused
        delivery.record_action(db.session, road["courier"], road["stop_id"],
                               action="delivered", client_action_id="late",
                               recipient_name="A Patient", signature_png=signature,
                               recorded_at=datetime.now(UTC))
    db.session.rollback()
    web_login(client, road["courier"].email, DEFAULT_PASSWORD)
    token = csrf_token(client, f"/courier/stops/{road['stop_id']}")
    sent = client.post(f"/courier/stops/{road['stop_id']}/actions", data={
        "csrf_token": token, "action": "delivered", "client_action_id": "queued",
        "recipient_name": "A Patient", "signature": signature,
        "recorded_at": handed_over.isoformat().replace("+00:00", "Z")})
    assert sent.status_code == 200, sent.get_json()
    db.session.expire_all()
    order = db.session.get(Order, road["order_id"])
    assert order.status is OrderStatus.DELIVERED and order.recall_closed_at is None
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "delivery.delivered"))
    assert event.after["before_recall"] is True

    client.get("/logout")
    web_login(client, road["pharmacist"].email, DEFAULT_PASSWORD)
    listed = client.get("/pharmacist/recalled-parcels").get_data(as_text=True)
    assert "the patient has it" in listed
    token = csrf_token(client, "/pharmacist/recalled-parcels")
    refused = client.post(f"/pharmacist/recalled-parcels/{order.id}/received",
                          data={"csrf_token": token, "checked": "yes"})
    assert refused.status_code == 409  # nothing came back: no refund, no stock
    done = client.post(f"/pharmacist/recalled-parcels/{order.id}/followed-up",
                       data={"csrf_token": token, "note": "Phoned: told not to take it; "
                             "collecting tomorrow"})
    assert done.status_code == 302
    db.session.expire_all()
    assert db.session.get(Order, road["order_id"]).recall_closed_at is not None
    assert "order.recall_followed_up" in _actions(db, road["order_id"])


def test_staff_cannot_move_a_recalled_parcel_past_receiving_it(  # type: ignore[no-untyped-def]
        client, db, world, shopper, card, fast_routing) -> None:  # noqa: F811
    road = _on_the_road(client, db, world, shopper, card, "acute")
    rx_service.withdraw(db.session, db.session.get(Prescription, road["rx_id"]),
                        road["pharmacist"], "wrong patient")
    db.session.commit()
    moved = client.post(f"/api/v1/orders/{road['order_id']}/transitions",
                        json={"to": "failed", "reason": "back"}, headers=shopper["staff"])
    assert moved.status_code == 409 and "recalled-parcels" in moved.get_json()["detail"]
