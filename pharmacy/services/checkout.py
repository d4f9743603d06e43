"""Checkout and the money side of an order's life: authorise, capture, void, refund.

The order is placed (stock and slot reserved) and committed before Stripe is called, so no
database transaction is held open across the network; the card is then authorised and the
result recorded in a second transaction. A retried checkout finds the same order (its
Idempotency-Key) and the same PaymentIntent (Stripe idempotency key derived from the order).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from ..errors import Conflict, DomainError, InvalidRequest
from ..models import (
    Order,
    OrderStatus,
    PatientProfile,
    Payment,
    PaymentStatus,
    User,
)
from ..models.base import utcnow
from . import audit, orders

logger = logging.getLogger(__name__)


@dataclass
class CheckoutResult:
    order: Order
    replayed: bool
    payment: Payment | None
    client_secret: str | None = None
    message: str | None = None


def _payments() -> Any:
    from . import payments

    return payments


def latest_payment(order: Order) -> Payment | None:
    return max(order.payments, key=lambda p: p.id) if order.payments else None


def authorise(session: Session, order: Order, *, actor: User | None,
              payment_method: str | None, save_card: bool = False,
              return_url: str | None = None, request_id: str | None = None) -> CheckoutResult:
    """Authorise the order's total on the card; a paid order moves on to the pharmacy.

    A cancelled order (not paid within its hold, or cancelled by the patient) is never
    authorised: nothing would ever release the hold on the card.
    """
    if order.status in (OrderStatus.CANCELLED, OrderStatus.REFUNDED):
        raise Conflict(f"This order was {order.status.value} and can no longer be paid for; "
                       "nothing was charged. Please place it again.")
    if order.total_minor == 0:
        orders.mark_paid(session, order, actor=actor, request_id=request_id)
        return CheckoutResult(order, False, None, message="Nothing to pay.")
    current = latest_payment(order)
    if current is not None and current.status in (PaymentStatus.AUTHORISED,
                                                  PaymentStatus.CAPTURED):
        orders.mark_paid(session, order, actor=actor, request_id=request_id)
        return CheckoutResult(order, False, current)
    result = _payments().authorise(session, order, payment_method=payment_method,
                                   save_card=save_card, return_url=return_url)
    payment = result.payment
    if payment.status is PaymentStatus.AUTHORISED:
        orders.mark_paid(session, order, actor=actor, request_id=request_id)
    return CheckoutResult(order, False, payment, client_secret=getattr(result, "client_secret",
                                                                       None),
                          message=payment.last_error)


def confirm(session: Session, order: Order, *, actor: User | None,
            request_id: str | None = None) -> CheckoutResult:
    """After the page finished 3-D Secure: re-read the payment and move the order on."""
    payment = latest_payment(order)
    if payment is None:
        return CheckoutResult(order, False, None, message="No payment to confirm.")
    payment = _payments().refresh(session, payment)
    if payment.status is PaymentStatus.AUTHORISED:
        orders.mark_paid(session, order, actor=actor, request_id=request_id)
    return CheckoutResult(order, False, payment, message=payment.last_error)


def cancel_order(session: Session, order: Order, *, actor: User | None, reason: str,
                 request_id: str | None = None) -> Order:
    """Cancel before dispatch; void the authorisation, or refund what was captured."""
    orders.cancel(session, order, actor=actor, reason=reason, request_id=request_id)
    payment = latest_payment(order)
    if payment is None:
        return order
    owed = payment.amount_captured_minor - payment.amount_refunded_minor
    if payment.status in (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED):
        if owed > 0:
            _payments().refund(session, order, amount_minor=owed, reason=reason, actor=actor)
    elif payment.status not in (PaymentStatus.REFUNDED, PaymentStatus.CANCELLED):
        # Voids every open PaymentIntent of the order (a failed one too, so a stale page
        # cannot confirm it later); idempotent.
        _payments().cancel(session, order, reason=reason, actor=actor)
    return order


def dispatch(session: Session, order: Order, *, actor: User | None,
             request_id: str | None = None) -> Order:
    """Out for delivery: capture what was supplied (less than authorised after short supply)."""
    payment = latest_payment(order)
    if order.total_minor > 0 and (payment is None or payment.status not in (
            PaymentStatus.AUTHORISED, PaymentStatus.CAPTURED)):
        raise PaymentRequired("This order has no authorised payment to capture.")
    orders.advance(session, order, OrderStatus.OUT_FOR_DELIVERY, actor=actor,
                   request_id=request_id)
    if payment is not None and payment.status is PaymentStatus.AUTHORISED:
        if order.total_minor > 0:
            _payments().capture(session, order, amount_minor=order.total_minor, actor=actor)
        else:  # nothing was supplied that costs anything: release the hold, take nothing
            _payments().cancel(session, order, reason="nothing to charge after packing",
                               actor=actor)
    patient = session.get(PatientProfile, order.patient_id)
    if patient is not None:
        from . import notify

        window = ""
        if order.delivery_window_start and order.delivery_window_end:
            start = order.delivery_window_start.astimezone(orders.LONDON)
            end = order.delivery_window_end.astimezone(orders.LONDON)
            window = f"between {start:%H:%M} and {end:%H:%M} today"
        notify.create_notification(
            session, kind="delivery.coming", patient=patient,
            dedupe_key=f"delivery-coming:{order.id}:{utcnow():%Y%m%d}",
            given_name=patient.given_name, reference=order.reference, window=window)
    return order


def refund_returned(session: Session, order: Order, *, actor: User | None, reason: str,
                    request_id: str | None = None) -> Order:
    """A returned parcel: refund what was charged and close the order."""
    payment = latest_payment(order)
    if payment is not None and payment.amount_captured_minor > payment.amount_refunded_minor:
        _payments().refund(session, order, amount_minor=payment.amount_captured_minor
                           - payment.amount_refunded_minor, reason=reason, actor=actor)
    orders.advance(session, order, OrderStatus.REFUNDED, actor=actor, reason=reason,
                   request_id=request_id)
    return order


def receive_recalled(session: Session, order: Order, *, actor: User, checked: bool,
                     request_id: str | None = None) -> Order:
    """A recalled parcel is back at the pharmacy (the caller locks its open stops, then the
    order: `delivery.lock_open_stops`): its open delivery stop is closed, its units go back
    on the books (controlled drugs back in the register, the pharmacist writes off what is
    not fit to supply again), and the patient is refunded in full and told. ``checked``:
    the pharmacist confirms the sealed parcel is here and its contents counted. Receiving
    it again changes nothing."""
    if order.recalled_at is None:
        raise Conflict("This parcel has not been recalled.", current_status=order.status.value)
    if order.status is OrderStatus.REFUNDED:
        return order
    if order.status is OrderStatus.DELIVERED:
        raise Conflict("This parcel was handed over before the recall reached the courier: "
                       "it is with the patient. Contact them, and record that you did.",
                       current_status=order.status.value)
    if not checked:
        raise InvalidRequest("Confirm that the sealed parcel is here and its contents "
                             "counted before receiving it.",
                             errors=[{"field": "checked", "message": "Required."}])
    order.recall_closed_at = utcnow()
    reason = f"recalled: {order.recall_reason}"
    if order.status is OrderStatus.OUT_FOR_DELIVERY:
        from .delivery import close_stops_brought_back

        close_stops_brought_back(session, order, actor=actor)
        orders.advance(session, order, OrderStatus.FAILED, actor=actor, request_id=request_id,
                       reason="recalled parcel brought back without a delivery attempt")
    if order.status is OrderStatus.FAILED:
        orders.advance(session, order, OrderStatus.RETURNED, actor=actor, reason=reason,
                       request_id=request_id)
    refund_returned(session, order, actor=actor, reason=reason, request_id=request_id)
    patient = session.get(PatientProfile, order.patient_id)
    if patient is not None:
        from . import notify

        notify.create_notification(session, kind="order.recall_refunded", patient=patient,
                                   dedupe_key=f"recall-refunded:{order.id}",
                                   given_name=patient.given_name, reference=order.reference)
    return order


def follow_up_recall(session: Session, order: Order, *, actor: User, note: str,
                     request_id: str | None = None) -> Order:
    """Close the recall of a parcel handed over before the recall reached the courier, once
    a pharmacist has contacted the patient (what was done goes in ``note``, audited)."""
    text = " ".join((note or "").split())[:1000]
    if order.recalled_at is None or order.status is not OrderStatus.DELIVERED:
        raise Conflict("Only a recalled parcel that was delivered anyway is followed up; "
                       "receive a parcel that came back.", current_status=order.status.value)
    if order.recall_closed_at is not None:
        return order
    if not text:
        raise InvalidRequest("Say how the patient was contacted and what they were told.",
                             errors=[{"field": "note", "message": "Required."}])
    order.recall_closed_at = utcnow()
    audit.record(session, action="order.recall_followed_up", entity_type="order",
                 entity_id=order.id, actor=actor, reason=text, request_id=request_id,
                 before={"recall_closed": False}, after={"recall_closed": True})
    session.flush()
    return order


class PaymentRequired(DomainError):
    status, code, title = 402, "payment_required", "Payment Required"


def release_unpaid(session: Session, order: Order) -> None:
    """An unpaid order past its hold: cancel it and void any half-done authorisation."""
    cancel_order(session, order, actor=None, reason="not paid in time")


def owner_patient(user: User) -> PatientProfile | None:
    return user.patient
