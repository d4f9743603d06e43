"""The payments service against a real localstripe: authorise, capture, cancel, refund."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from pharmacy.errors import InvalidRequest
from pharmacy.models import AuditEvent, Order, PatientProfile, Payment, PaymentStatus
from pharmacy.services import payments
from tests.payments.conftest import (
    DECLINED,
    THREE_D_SECURE,
    VISA,
    intents_for,
    pass_three_d_secure,
)

pytestmark = pytest.mark.usefixtures("stripe_config")


def _audit_actions(db, payment: Payment) -> list[str]:
    return list(db.session.scalars(
        select(AuditEvent.action).where(AuditEvent.entity_type == "payment",
                                        AuditEvent.entity_id == str(payment.id))
        .order_by(AuditEvent.id)))


def test_zero_total_order_needs_no_payment_intent(db, make_order, stripe_client) -> None:
    order = make_order(total_minor=0)
    result = payments.authorise(db.session, order)
    assert result.payment is None and not result.payment_required and result.authorised
    assert payments.capture(db.session, order) is None
    assert payments.cancel(db.session, order, reason="test") is None
    assert intents_for(stripe_client, order) == []


def test_authorise_then_capture_on_dispatch(db, make_order, card, stripe_client) -> None:
    order = make_order(total_minor=1250)
    result = payments.authorise(db.session, order, payment_method=card(VISA))
    db.session.commit()

    payment = result.payment
    assert result.authorised and payment is not None
    assert payment.status is PaymentStatus.AUTHORISED
    assert (payment.amount_minor, payment.amount_captured_minor) == (1250, 0)
    assert result.client_secret is None and payment.last_error is None
    [pi] = intents_for(stripe_client, order)
    assert pi["id"] == payment.provider_payment_id
    assert (pi["status"], pi["capture_method"], pi["amount"], pi["currency"]) == (
        "requires_capture", "manual", 1250, "gbp")
    assert pi["metadata"] == {"order_id": str(order.id), "order_reference": order.reference}
    patient = db.session.get(PatientProfile, order.patient_id)
    assert patient.stripe_customer_id and pi["customer"] == patient.stripe_customer_id

    captured = payments.capture(db.session, order)
    db.session.commit()
    assert captured is payment
    assert payment.status is PaymentStatus.CAPTURED and payment.amount_captured_minor == 1250
    assert stripe_client.v1.payment_intents.retrieve(pi["id"]).status == "succeeded"
    # A retried dispatch changes nothing.
    assert payments.capture(db.session, order) is payment
    assert _audit_actions(db, payment) == ["payment.created", "payment.authorised",
                                           "payment.captured"]
    capture_audit = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "payment.captured")).one()
    assert capture_audit.before["status"] == "authorised"
    assert capture_audit.after["amount_captured_minor"] == 1250


def test_second_order_of_a_patient_reuses_the_stripe_customer(db, make_order, card) -> None:
    first = make_order()
    payments.authorise(db.session, first, payment_method=card(VISA))
    patient = db.session.get(PatientProfile, first.patient_id)
    customer = patient.stripe_customer_id
    second = make_order(patient=patient)
    result = payments.authorise(db.session, second, payment_method=card(VISA))
    assert result.payment.status is PaymentStatus.AUTHORISED
    assert patient.stripe_customer_id == customer


def test_cancel_before_capture_releases_the_hold(db, make_order, card, stripe_client) -> None:
    order = make_order(total_minor=900)
    payment = payments.authorise(db.session, order, payment_method=card(VISA)).payment
    db.session.commit()

    cancelled = payments.cancel(db.session, order, reason="pharmacist rejected an item")
    db.session.commit()
    assert cancelled is payment and payment.status is PaymentStatus.CANCELLED
    assert payment.amount_captured_minor == 0
    assert stripe_client.v1.payment_intents.retrieve(
        payment.provider_payment_id).status == "canceled"
    assert payments.cancel(db.session, order, reason="again") is payment  # idempotent
    with pytest.raises(payments.PaymentStateConflict):
        payments.capture(db.session, order)
    audit = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "payment.cancelled")).one()
    assert audit.reason == "pharmacist rejected an item"
    assert (audit.before["status"], audit.after["status"]) == ("authorised", "cancelled")


def test_cancel_after_capture_is_a_conflict(db, make_order, card) -> None:
    order = make_order()
    payments.authorise(db.session, order, payment_method=card(VISA))
    payments.capture(db.session, order)
    with pytest.raises(payments.PaymentStateConflict) as info:
        payments.cancel(db.session, order, reason="too late")
    assert info.value.status == 409


def test_partial_supply_partial_capture_then_partial_refunds(
        db, make_order, card, stripe_client,
) -> None:
    order = make_order(total_minor=1000)
    payment = payments.authorise(db.session, order, payment_method=card(VISA)).payment
    payments.capture(db.session, order, amount_minor=700)  # 3 of 10 packs were short
    db.session.commit()
    assert (payment.status, payment.amount_captured_minor) == (PaymentStatus.CAPTURED, 700)

    payments.refund(db.session, order, amount_minor=200, reason="one pack damaged")
    db.session.commit()
    assert payment.status is PaymentStatus.PARTIALLY_REFUNDED
    assert payment.amount_refunded_minor == 200
    with pytest.raises(payments.InvalidPaymentAmount):
        payments.refund(db.session, order, amount_minor=501, reason="more than is left")

    payments.refund(db.session, order, amount_minor=500, reason="returned")
    db.session.commit()
    assert (payment.status, payment.amount_refunded_minor) == (PaymentStatus.REFUNDED, 700)
    ours = [r for r in stripe_client.v1.refunds.list(
        {"payment_intent": payment.provider_payment_id}).data if r.to_dict()["metadata"]]
    assert sorted(r.amount for r in ours) == [200, 500]
    with pytest.raises(payments.InvalidPaymentAmount):
        payments.refund(db.session, order, amount_minor=1, reason="nothing left")


def test_a_refund_retried_after_a_lost_commit_is_not_made_twice(
        db, make_order, card, stripe_client,
) -> None:
    order = make_order(total_minor=1000)
    payment = payments.authorise(db.session, order, payment_method=card(VISA)).payment
    payments.capture(db.session, order)
    db.session.commit()
    payments.refund(db.session, order, amount_minor=300, reason="short")
    db.session.rollback()  # e.g. the request failed after Stripe refunded
    assert payment.amount_refunded_minor == 0

    payments.refund(db.session, order, amount_minor=300, reason="short")
    db.session.commit()
    assert payment.amount_refunded_minor == 300
    refunds = stripe_client.v1.refunds.list({"payment_intent": payment.provider_payment_id})
    assert [r.amount for r in refunds.data] == [300]


def test_capture_validates_the_amount(db, make_order, card) -> None:
    order = make_order(total_minor=500)
    payments.authorise(db.session, order, payment_method=card(VISA))
    for amount in (0, -1, 501):
        with pytest.raises(payments.InvalidPaymentAmount):
            payments.capture(db.session, order, amount_minor=amount)


def test_declined_card_leaves_the_order_unpaid_with_a_clear_message(
        db, make_order, card, stripe_client,
) -> None:
    order = make_order(total_minor=1500)
    result = payments.authorise(db.session, order, payment_method=card(DECLINED))
    db.session.commit()

    payment = result.payment
    assert result.declined and not result.authorised
    assert payment.status is PaymentStatus.FAILED and payment.amount_captured_minor == 0
    assert payment.last_error == result.error_message
    assert "declined" in payment.last_error and "no money has been taken" in payment.last_error
    assert "card_declined" not in payment.last_error
    assert result.client_secret is None
    with pytest.raises(payments.PaymentDeclined) as info:
        result.raise_if_declined()
    assert (info.value.status, info.value.code) == (402, "payment_declined")
    with pytest.raises(payments.PaymentStateConflict):
        payments.capture(db.session, order)

    # The patient tries another card: a new PaymentIntent, the declined one is closed.
    retry = payments.authorise(db.session, order, payment_method=card(VISA))
    db.session.commit()
    assert retry.payment.id != payment.id
    assert retry.payment.status is PaymentStatus.AUTHORISED
    assert payment.status is PaymentStatus.CANCELLED and payment.last_error  # history kept
    statuses = sorted(pi["status"] for pi in intents_for(stripe_client, order))
    assert statuses == ["canceled", "requires_capture"]


def test_three_d_secure_needs_action_in_the_page(
        db, make_order, card, stripe_client, localstripe_url,
) -> None:
    order = make_order(total_minor=2000)
    result = payments.authorise(db.session, order, payment_method=card(THREE_D_SECURE))
    db.session.commit()
    payment = result.payment
    assert payment.status is PaymentStatus.REQUIRES_ACTION and result.requires_action
    pi = stripe_client.v1.payment_intents.retrieve(payment.provider_payment_id)
    assert result.client_secret == pi.client_secret
    assert result.next_action_url is None  # use_stripe_sdk: Stripe.js handles it in the page

    # A reloaded checkout page gets the same PaymentIntent and secret back.
    again = payments.authorise(db.session, order, payment_method=card(THREE_D_SECURE))
    assert again.payment is payment and again.client_secret == result.client_secret
    assert len(intents_for(stripe_client, order)) == 1

    pass_three_d_secure(localstripe_url, pi.id, result.client_secret)
    payments.refresh(db.session, payment)
    db.session.commit()
    assert payment.status is PaymentStatus.AUTHORISED


def test_page_confirmation_flow_without_a_payment_method(
        db, make_order, card, stripe_client,
) -> None:
    order = make_order(total_minor=800)
    result = payments.authorise(db.session, order)
    assert result.payment.status is PaymentStatus.REQUIRES_PAYMENT_METHOD
    assert result.client_secret and result.client_secret.startswith(
        result.payment.provider_payment_id)
    # A saved card chosen afterwards confirms the same PaymentIntent.
    result = payments.authorise(db.session, order, payment_method=card(VISA))
    assert result.payment.status is PaymentStatus.AUTHORISED
    assert len(intents_for(stripe_client, order)) == 1


def test_save_card_then_list_it(db, make_order, card) -> None:
    order = make_order()
    payments.authorise(db.session, order, payment_method=card(VISA), save_card=True)
    patient = db.session.get(PatientProfile, order.patient_id)
    [saved] = payments.list_saved_cards(db.session, patient)
    assert (saved.brand, saved.last4, saved.exp_month, saved.exp_year) == ("visa", "4242",
                                                                          12, 2031)
    assert saved.id.startswith("pm_")
    secret = payments.create_setup_intent(db.session, patient)
    assert secret.startswith("seti_") and "_secret_" in secret


def test_retried_checkout_makes_one_payment_intent(db, make_order, card, stripe_client) -> None:
    order = make_order()
    pm = card(VISA)
    first = payments.authorise(db.session, order, payment_method=pm)
    db.session.commit()
    second = payments.authorise(db.session, order, payment_method=pm)
    db.session.commit()
    assert second.payment is first.payment
    assert len(intents_for(stripe_client, order)) == 1
    assert payments.payment_intent_count(db.session, order) == 1


def test_ten_concurrent_checkouts_of_one_order_make_one_payment_intent(
        app, db, make_order, card, stripe_client,
) -> None:
    order = make_order(total_minor=4200)
    order_id = order.id
    db.session.commit()
    methods = [card(VISA) for _ in range(10)]
    barrier = threading.Barrier(10)
    outcomes: list[object] = []

    def checkout(pm: str) -> None:
        with app.app_context():
            try:
                mine = db.session.get(Order, order_id)
                barrier.wait(timeout=10)
                result = payments.authorise(db.session, mine, payment_method=pm)
                db.session.commit()
                outcomes.append((result.payment.id, result.payment.status))
            except Exception as exc:  # noqa: BLE001 - reported below
                outcomes.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=checkout, args=(pm,)) for pm in methods]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == 10
    assert {o for o in outcomes} == {(outcomes[0][0], PaymentStatus.AUTHORISED)}, outcomes
    assert len(intents_for(stripe_client, order)) == 1
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 1


def test_stripe_unreachable_is_a_503_domain_error(app, db, make_order, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "STRIPE_API_BASE", "http://127.0.0.1:1")
    monkeypatch.setitem(app.config, "STRIPE_API_KEY", "sk_test_unreachable")
    order = make_order()
    with pytest.raises(payments.PaymentProviderUnavailable) as info:
        payments.authorise(db.session, order, payment_method="pm_x")
    assert (info.value.status, info.value.code) == (503, "payment_provider_unavailable")


def test_an_unknown_card_is_a_422(db, make_order) -> None:
    with pytest.raises(InvalidRequest) as info:
        payments.authorise(db.session, make_order(), payment_method="pm_doesnotexist")
    assert info.value.status == 422 and info.value.errors[0]["field"] == "payment_method"


def test_not_configured_is_a_503(app, db, make_order, monkeypatch) -> None:
    monkeypatch.setitem(app.config, "STRIPE_API_KEY", "")
    with pytest.raises(payments.PaymentProviderUnavailable):
        payments.authorise(db.session, make_order())


def test_a_cancelled_order_is_never_authorised(db, make_order, card, stripe_client) -> None:
    from pharmacy.errors import Conflict
    from pharmacy.models import OrderStatus
    from pharmacy.services import checkout

    order = make_order(total_minor=700)
    order.status = OrderStatus.CANCELLED  # its hold ran out before the page was submitted
    db.session.commit()
    with pytest.raises(Conflict, match="can no longer be paid for"):
        checkout.authorise(db.session, order, actor=None, payment_method=card(VISA))
    assert intents_for(stripe_client, order) == []
