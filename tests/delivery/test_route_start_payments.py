"""Starting a route takes each parcel's money on its own (localstripe, PostgreSQL): a parcel
whose payment cannot be taken stays at the pharmacy without undoing the others, and a
parcel with nothing left to charge releases its card hold instead of failing."""

from __future__ import annotations

from sqlalchemy import select

from pharmacy.models import (
    AuditEvent,
    DeliveryRoute,
    DeliverySlot,
    DeliveryStop,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
    StopStatus,
    User,
)
from pharmacy.services import delivery
from tests.payments.conftest import VISA
from tests.pharmacy.test_checkout_stripe import shopper  # noqa: F401
from tests.pharmacy.test_orders_api import world  # noqa: F401


def test_one_parcel_that_cannot_be_charged_stays_behind_and_the_rest_go(  # type: ignore[no-untyped-def]
        client, db, world, shopper, card, stripe_client, fast_routing) -> None:  # noqa: F811
    from pharmacy.jobs.deliveries import plan_wave

    courier_id = world["courier"].id
    paid, nothing, lapsed = (shopper["place"](card(VISA), packs=1) for _ in range(3))
    shopper["move"](paid["id"], "packed")
    shopper["move"](nothing["id"], "packed", supplied={str(nothing["lines"][0]["id"]): 0})
    shopper["move"](lapsed["id"], "packed")
    # The third card hold lapsed (Stripe cancels uncaptured holds after 7 days).
    db.session.expire_all()
    payment = db.session.scalar(select(Payment).where(Payment.order_id == lapsed["id"]))
    payment.status = PaymentStatus.CANCELLED
    slot = db.session.get(DeliverySlot, db.session.get(Order, paid["id"]).delivery_slot_id)
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    assert plan_wave(wave_id, 0) == wave_id
    route = db.session.scalars(select(DeliveryRoute)).one()
    courier = db.session.get(User, courier_id)

    delivery.start_route(db.session, route, actor=courier)
    db.session.commit()
    db.session.expire_all()

    def state(order_id: int) -> tuple[OrderStatus, PaymentStatus]:
        order = db.session.get(Order, order_id)
        latest = max(order.payments, key=lambda p: p.id)
        return order.status, latest.status

    assert state(paid["id"]) == (OrderStatus.OUT_FOR_DELIVERY, PaymentStatus.CAPTURED)
    assert state(nothing["id"]) == (OrderStatus.OUT_FOR_DELIVERY, PaymentStatus.CANCELLED)
    assert state(lapsed["id"]) == (OrderStatus.PACKED, PaymentStatus.CANCELLED)
    captured = db.session.scalar(select(Payment).where(Payment.order_id == paid["id"]))
    assert stripe_client.v1.payment_intents.retrieve(
        captured.provider_payment_id).status == "succeeded"
    stop = db.session.scalar(select(DeliveryStop).where(DeliveryStop.order_id == lapsed["id"]))
    assert stop.status is StopStatus.UNSERVED and stop.route_id is None
    assert stop.unserved_reason.startswith("kept at the pharmacy: ")
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "delivery.stop_held_back",
        AuditEvent.entity_id == str(lapsed["id"])))
