"""A courier's flaky phone sends the same delivery three times: one record, one capture."""

from __future__ import annotations

from sqlalchemy import func, select

from pharmacy.models import (
    AuditEvent,
    DeliveryAttempt,
    DeliveryRoute,
    DeliverySlot,
    Order,
    Payment,
)
from pharmacy.services import delivery
from tests.delivery.test_courier import png_data_url
from tests.factories import DEFAULT_PASSWORD
from tests.payments.conftest import VISA
from tests.pharmacy.helpers import csrf_token, web_login
from tests.pharmacy.test_checkout_stripe import shopper  # noqa: F401
from tests.pharmacy.test_orders_api import world  # noqa: F401


def test_three_deliveries_of_one_stop_capture_the_card_once(  # noqa: F811
        client, db, shopper, card, world, fast_routing) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    from pharmacy.jobs.deliveries import plan_wave

    courier_email = world["courier"].email  # plan_wave releases the session while solving
    order = shopper["place"](card(VISA))
    assert order["payment"]["status"] == "authorised"
    shopper["move"](order["id"], "packed")
    slot = db.session.get(DeliverySlot, db.session.get(Order, order["id"]).delivery_slot_id)
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    assert plan_wave(wave_id, 0) == wave_id
    route = db.session.scalar(select(DeliveryRoute).where(DeliveryRoute.wave_id == wave_id))
    route_id, stop_id = route.id, route.stops[0].id

    client.post("/logout", data={"csrf_token": csrf_token(client, "/login")})
    web_login(client, courier_email, DEFAULT_PASSWORD)
    token = csrf_token(client, f"/courier/routes/{route_id}")
    for _ in range(2):  # "Start route" tapped twice
        client.post(f"/courier/routes/{route_id}/start", data={"csrf_token": token})
    for _ in range(3):
        response = client.post(f"/courier/stops/{stop_id}/actions", data={
            "csrf_token": token, "action": "delivered", "client_action_id": "same-tap",
            "recipient_name": "Pat", "signature": png_data_url()})
        assert response.status_code == 200, response.get_json()

    assert db.session.scalar(select(func.count(DeliveryAttempt.id))) == 1
    payment = db.session.scalar(select(Payment).where(Payment.order_id == order["id"]))
    db.session.refresh(payment)
    assert payment.status.value == "captured"
    assert payment.amount_captured_minor == order["total_minor"]
    assert db.session.scalar(select(func.count(AuditEvent.id)).where(
        AuditEvent.action == "payment.captured")) == 1
