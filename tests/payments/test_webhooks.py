"""Stripe webhooks: signature, stored once, applied forward-only, real deliveries."""

from __future__ import annotations

import threading
import time
from unittest.mock import Mock

import pytest
import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from pharmacy.models import AuditEvent, Payment, PaymentStatus, WebhookEvent
from pharmacy.services import payments
from tests.payments.conftest import (
    API_KEY,
    THREE_D_SECURE,
    VISA,
    WEBHOOK_SECRET,
    event_for,
    pass_three_d_secure,
    signed,
)

pytestmark = pytest.mark.usefixtures("stripe_config")


def _count(db, model) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)))


def _pi(stripe_client, payment: Payment) -> dict:
    return stripe_client.v1.payment_intents.retrieve(payment.provider_payment_id).to_dict()


def _deliver(db, event: dict, **kwargs) -> payments.WebhookOutcome:
    payload, header = signed(event, **kwargs)
    outcome = payments.handle_webhook(db.session, payload, header)
    db.session.commit()
    return outcome


def test_replayed_webhook_changes_nothing_the_second_time(
        db, make_order, card, stripe_client, localstripe_url,
) -> None:
    order = make_order(total_minor=3000)
    payment = payments.authorise(db.session, order, payment_method=card(THREE_D_SECURE)).payment
    db.session.commit()
    secret = _pi(stripe_client, payment)["client_secret"]
    pass_three_d_secure(localstripe_url, payment.provider_payment_id, secret)
    event = event_for(_pi(stripe_client, payment), "payment_intent.amount_capturable_updated")

    first = _deliver(db, event)
    assert (first.outcome, first.payment_id) == ("processed", payment.id)
    assert payment.status is PaymentStatus.AUTHORISED
    audits = _count(db, AuditEvent)

    second = _deliver(db, event)
    assert second.outcome == "duplicate"
    assert payment.status is PaymentStatus.AUTHORISED
    assert _count(db, AuditEvent) == audits
    stored = db.session.scalars(select(WebhookEvent)).one()
    assert (stored.event_id, stored.outcome) == (event["id"], "processed")
    assert stored.processed_at is not None and stored.event_created_at is not None
    assert stored.payload["data"]["object"]["id"] == payment.provider_payment_id
    assert "client_secret" not in stored.payload["data"]["object"]  # only what audits need


def test_late_events_never_move_a_captured_payment_backwards(
        db, make_order, card, stripe_client,
) -> None:
    order = make_order(total_minor=1000)
    payment = payments.authorise(db.session, order, payment_method=card(VISA)).payment
    authorised_snapshot = _pi(stripe_client, payment)  # status requires_capture
    payments.capture(db.session, order)
    db.session.commit()

    for event_type in ("payment_intent.amount_capturable_updated",
                       "payment_intent.requires_action", "payment_intent.created"):
        outcome = _deliver(db, event_for(authorised_snapshot, event_type))
        assert outcome.outcome == "unchanged", event_type
        assert payment.status is PaymentStatus.CAPTURED
        assert payment.amount_captured_minor == 1000


def test_a_late_authorisation_event_does_not_revive_a_cancelled_payment(
        db, make_order, card, stripe_client,
) -> None:
    order = make_order()
    payment = payments.authorise(db.session, order, payment_method=card(VISA)).payment
    stale = _pi(stripe_client, payment)
    payments.cancel(db.session, order, reason="out of stock")
    db.session.commit()
    assert _deliver(db, event_for(stale, "payment_intent.amount_capturable_updated")
                    ).outcome == "unchanged"
    assert payment.status is PaymentStatus.CANCELLED


STALE_STATES = [
    (PaymentStatus.CAPTURED, {"status": "requires_capture"}),
    (PaymentStatus.CAPTURED, {"status": "canceled"}),
    (PaymentStatus.REFUNDED, {"status": "succeeded", "amount_received": 1000,
                              "latest_charge": {"amount": 1000, "amount_refunded": 0}}),
    (PaymentStatus.CANCELLED, {"status": "requires_capture"}),
    (PaymentStatus.AUTHORISED, {"status": "requires_action"}),
    (PaymentStatus.AUTHORISED, {"status": "requires_payment_method",
                                "last_payment_error": {"code": "card_declined"}}),
]


def test_stale_provider_state_is_never_applied() -> None:
    """Even if Stripe were read at an older moment, the forward-only rule holds."""
    for current, provider_says in STALE_STATES:
        captured = 1000 if current in {PaymentStatus.CAPTURED, PaymentStatus.REFUNDED} else 0
        refunded = 1000 if current is PaymentStatus.REFUNDED else 0
        payment = Payment(id=1, order_id=1, provider_payment_id="pi_x", status=current,
                          amount_minor=1000, amount_captured_minor=captured,
                          amount_refunded_minor=refunded)
        session = Mock(spec=Session)
        assert payments._apply(session, payment, provider_says, source="test") is False
        assert (payment.status, payment.amount_captured_minor,
                payment.amount_refunded_minor) == (current, captured, refunded), provider_says
        assert not session.method_calls


def test_a_refund_made_at_stripe_arrives_by_charge_refunded(
        db, make_order, card, stripe_client,
) -> None:
    order = make_order(total_minor=1000)
    payment = payments.authorise(db.session, order, payment_method=card(VISA)).payment
    payments.capture(db.session, order, amount_minor=700)
    db.session.commit()
    stripe_client.v1.refunds.create({"payment_intent": payment.provider_payment_id,
                                     "amount": 100})  # e.g. from the Stripe dashboard
    charge = _pi(stripe_client, payment)["latest_charge"]

    assert _deliver(db, event_for(charge, "charge.refunded")).outcome == "processed"
    assert payment.status is PaymentStatus.PARTIALLY_REFUNDED
    assert (payment.amount_captured_minor, payment.amount_refunded_minor) == (700, 100)
    audit = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "payment.partially_refunded")).one()
    assert audit.after["source"] == "webhook:charge.refunded"


def test_forged_or_stale_signatures_are_refused(db) -> None:
    event = event_for({"id": "pi_x", "object": "payment_intent"}, "payment_intent.succeeded")
    payload, header = signed(event)
    forgeries = {
        "wrong secret": signed(event, secret="whsec_attacker"),
        "too old": signed(event, timestamp=int(time.time()) - 3600),
        "tampered body": (payload.replace(b"pi_x", b"pi_y"), header),
        "no header": (payload, ""),
        "not utf-8": (b"\xff" + payload, header),
    }
    for name, (body, signature) in forgeries.items():
        with pytest.raises(payments.InvalidSignature) as info:
            payments.handle_webhook(db.session, body, signature)
        assert (info.value.status, info.value.code) == (400, "invalid_signature"), name
    assert _count(db, WebhookEvent) == 0


def test_other_events_and_unknown_intents_are_stored_and_ignored(db) -> None:
    assert _deliver(db, event_for({"id": "cus_1"}, "customer.created")).outcome == "ignored"
    assert _deliver(db, event_for({"id": "pi_elsewhere"}, "payment_intent.succeeded")
                    ).outcome == "unknown_payment"
    assert _count(db, WebhookEvent) == 2


def test_http_endpoint_verifies_signature_and_answers_replays(db, api_client, make_order,
                                                              card, stripe_client) -> None:
    order = make_order()
    payment = payments.authorise(db.session, order, payment_method=card(VISA)).payment
    db.session.commit()
    stripe_client.v1.payment_intents.capture(payment.provider_payment_id)
    event = event_for(_pi(stripe_client, payment), "payment_intent.succeeded")
    url = "/api/v1/payments/stripe/webhook"
    headers = {"Content-Type": "application/json"}

    payload, header = signed(event, secret="whsec_forged")
    forged = api_client.post(url, data=payload, headers={**headers, "Stripe-Signature": header})
    assert forged.status_code == 400 and forged.mimetype == "application/problem+json"
    assert forged.get_json()["code"] == "invalid_signature"
    assert api_client.post(url, data=payload, headers=headers).status_code == 400
    assert _count(db, WebhookEvent) == 0

    payload, header = signed(event)
    first = api_client.post(url, data=payload, headers={**headers, "Stripe-Signature": header})
    assert first.status_code == 200 and first.get_json() == {"received": True,
                                                            "outcome": "processed"}
    replay = api_client.post(url, data=payload, headers={**headers, "Stripe-Signature": header})
    assert replay.get_json() == {"received": True, "outcome": "duplicate"}
    db.session.expire_all()
    assert db.session.get(Payment, payment.id).status is PaymentStatus.CAPTURED


def test_http_endpoint_refuses_a_signed_body_that_is_not_an_event(db, api_client) -> None:
    import hashlib
    import hmac

    body = b"not json at all"
    t = int(time.time())
    digest = hmac.new(WEBHOOK_SECRET.encode(), f"{t}.".encode() + body,
                      hashlib.sha256).hexdigest()
    response = api_client.post("/api/v1/payments/stripe/webhook", data=body,
                               headers={"Stripe-Signature": f"t={t},v1={digest}"})
    assert response.status_code == 400
    assert response.get_json()["code"] == "invalid_payload"


def test_real_delivery_from_localstripe(db, api_client, make_order, card, stripe_client,
                                        localstripe_url) -> None:
    """localstripe signs and posts payment_intent.succeeded after a capture made at Stripe."""
    server = make_server("127.0.0.1", 0, api_client.application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hook = f"{localstripe_url}/_config/webhooks/payments_tests"
    try:
        requests.post(hook, auth=(API_KEY, ""), timeout=10, data={
            "url": f"http://127.0.0.1:{server.server_port}/api/v1/payments/stripe/webhook",
            "secret": WEBHOOK_SECRET, "events[]": ["payment_intent.succeeded"],
        }).raise_for_status()
        order = make_order(total_minor=1500)
        payment = payments.authorise(db.session, order, payment_method=card(VISA)).payment
        db.session.commit()
        stripe_client.v1.payment_intents.capture(payment.provider_payment_id)

        def ours() -> list[WebhookEvent]:
            # localstripe delivers to every registered hook, so other PaymentIntents' events
            # may arrive too (and are rightly "unknown_payment"); look at this one's.
            return [e for e in db.session.scalars(select(WebhookEvent)).all()
                    if e.event_type == "payment_intent.succeeded"
                    and e.payload["data"]["object"].get("id") == payment.provider_payment_id]

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            db.session.rollback()
            if ours():
                break
            time.sleep(0.2)
        [stored] = ours()
        assert stored.outcome == "processed"
        db.session.expire_all()
        captured = db.session.get(Payment, payment.id)
        assert (captured.status, captured.amount_captured_minor) == (PaymentStatus.CAPTURED,
                                                                     1500)
    finally:
        # localstripe cannot delete a webhook: leave it listening to nothing.
        requests.post(hook, auth=(API_KEY, ""), timeout=10, data={
            "url": "http://127.0.0.1:9/", "secret": WEBHOOK_SECRET,
            "events[]": ["none.none"]})
        server.shutdown()
        thread.join(5)


def test_a_3ds_authorisation_known_only_by_webhook_moves_the_order_on(
        db, make_order, card, stripe_client, localstripe_url,
) -> None:
    """The page closed after 3-D Secure: the webhook says the card is authorised, and the
    order goes on to the pharmacy instead of being cancelled as unpaid."""
    from pharmacy.models import OrderStatus

    order = make_order(total_minor=1800)
    payment = payments.authorise(db.session, order, payment_method=card(THREE_D_SECURE)).payment
    db.session.commit()
    assert order.status is OrderStatus.PLACED
    pass_three_d_secure(localstripe_url, payment.provider_payment_id,
                        _pi(stripe_client, payment)["client_secret"])
    event = event_for(_pi(stripe_client, payment), "payment_intent.amount_capturable_updated")
    assert _deliver(db, event).outcome == "processed"
    db.session.refresh(order)
    assert order.status is OrderStatus.READY_TO_PICK
    assert _deliver(db, event).outcome == "duplicate"  # a replay moves nothing
    assert order.status is OrderStatus.READY_TO_PICK


def test_the_unpaid_sweep_moves_an_authorised_order_on_instead_of_cancelling_it(
        app, db, make_order, card) -> None:
    from datetime import timedelta

    from pharmacy.jobs.orders import release_unpaid_orders
    from pharmacy.models import OrderStatus
    from pharmacy.models.base import utcnow

    order = make_order(total_minor=900)
    payments.authorise(db.session, order, payment_method=card(VISA))  # the page never confirmed
    order.status = OrderStatus.PLACED
    order.reserved_until = utcnow() - timedelta(minutes=1)
    db.session.commit()
    with app.app_context():
        assert release_unpaid_orders() == 0
    db.session.expire_all()
    assert db.session.get(type(order), order.id).status is OrderStatus.READY_TO_PICK
