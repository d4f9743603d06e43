"""Card payments through Stripe: authorise at checkout, capture at dispatch, cancel, refund.

The only module that imports the ``stripe`` SDK. Stripe objects are turned into plain dicts at
once (stripe 16 objects are not dicts). Every function takes the ``Session`` first, may flush
and never commits: the view or job that calls it commits once.

One order has at most one *live* PaymentIntent. ``authorise`` locks the order row, so retried or
concurrent checkouts of one order find the Payment row of the first instead of creating a
second PaymentIntent; Stripe idempotency keys cover the gap where Stripe saw a request but our
transaction rolled back (localstripe ignores them). A new PaymentIntent is only made after the
previous one failed, and the failed one is cancelled so a stale page cannot confirm it later.

Provider state only moves forward (see ``_may_move``): webhooks re-read the PaymentIntent from
Stripe, and a late or replayed event can never un-capture, un-cancel or un-refund a payment.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import requests
import stripe
from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Conflict, DomainError, InvalidRequest, NotFound
from ..models import (
    Order,
    OrderStatus,
    PatientProfile,
    Payment,
    PaymentStatus,
    User,
    WebhookEvent,
)
from ..models.base import utcnow
from . import audit

logger = logging.getLogger(__name__)

PROVIDER = "stripe"
WEBHOOK_TOLERANCE_S = 300  # Stripe's default: older signed timestamps are refused as replays
_EXTENSION_KEY = "dispensary.stripe_client"

T = TypeVar("T")


# --- errors -----------------------------------------------------------------------------------


class PaymentDeclined(DomainError):
    """The card was declined. Callers raise it (after committing the unpaid order) if they
    want a 402; ``authorise`` itself reports declines in its result."""

    status, code, title = 402, "payment_declined", "Payment Required"


class PaymentProviderUnavailable(DomainError):
    """Stripe could not be reached, refused our key, or payments are not configured."""

    status, code, title = 503, "payment_provider_unavailable", "Service Unavailable"


class PaymentProviderError(DomainError):
    """Stripe rejected a request we expected to succeed (a bug or a changed account)."""

    status, code, title = 502, "payment_provider_error", "Bad Gateway"


class PaymentStateConflict(Conflict):
    """The payment is not in a state that allows this (e.g. capture before authorisation)."""

    code = "payment_state_conflict"


class InvalidPaymentAmount(InvalidRequest):
    code = "invalid_payment_amount"


class InvalidSignature(DomainError):
    status, code, title = 400, "invalid_signature", "Bad Request"


class InvalidWebhookPayload(DomainError):
    status, code, title = 400, "invalid_payload", "Bad Request"


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentResult:
    """What checkout needs after ``authorise``.

    ``payment`` is None when the order total is zero (nothing to pay). ``client_secret`` is for
    the page's Stripe.js (3-D Secure or card entry); it is never stored.
    """

    payment: Payment | None
    client_secret: str | None = None
    next_action_url: str | None = None

    @property
    def payment_required(self) -> bool:
        return self.payment is not None

    @property
    def authorised(self) -> bool:
        """True when no payment is needed or the money is held (or already taken)."""
        return self.payment is None or self.payment.status in _HELD_OR_TAKEN

    @property
    def requires_action(self) -> bool:
        """3-D Secure: the page must run Stripe.js ``handleNextAction`` with the secret."""
        return self.payment is not None and self.payment.status is PaymentStatus.REQUIRES_ACTION

    @property
    def declined(self) -> bool:
        return self.payment is not None and self.payment.status is PaymentStatus.FAILED

    @property
    def error_message(self) -> str | None:
        return self.payment.last_error if self.declined and self.payment else None

    def raise_if_declined(self) -> None:
        """Raise ``PaymentDeclined`` with the patient-facing message (commit first!)."""
        if self.declined:
            raise PaymentDeclined(self.error_message or _DEFAULT_DECLINE,
                                  payment_id=self.payment.id if self.payment else None)


@dataclass(frozen=True)
class WebhookOutcome:
    """``outcome``: processed | unchanged | duplicate | ignored | unknown_payment."""

    outcome: str
    event_id: str
    event_type: str
    payment_id: int | None = None


@dataclass(frozen=True)
class CardSummary:
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


# --- the Stripe client ------------------------------------------------------------------------


@dataclass(frozen=True)
class StripeSettings:
    api_key: str
    api_base: str = ""
    webhook_secret: str = ""
    timeout_s: float = 20.0
    max_network_retries: int = 2

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StripeSettings:
        return cls(api_key=str(config.get("STRIPE_API_KEY") or ""),
                   api_base=str(config.get("STRIPE_API_BASE") or ""),
                   webhook_secret=str(config.get("STRIPE_WEBHOOK_SECRET") or ""))


def build_client(settings: StripeSettings) -> stripe.StripeClient:
    """A ``StripeClient`` for ``settings``; refuses to run without an API key."""
    if not settings.api_key:
        raise PaymentProviderUnavailable("Card payments are not configured (STRIPE_API_KEY).")
    base = {"api": settings.api_base.rstrip("/")} if settings.api_base else None
    proxies = requests.utils.get_environ_proxies(settings.api_base or "https://api.stripe.com")
    return stripe.StripeClient(
        settings.api_key,
        base_addresses=base,  # type: ignore[arg-type]
        # The SDK's default timeout is 80 s: far too long for a patient waiting at checkout.
        # requests' own proxy mapping (http, https, all), which the SDK hands to requests.
        http_client=_RequestsClient(timeout=settings.timeout_s,
                                    proxy=cast(Any, proxies or None)),
        max_network_retries=settings.max_network_retries,
    )


class _RequestsClient(stripe.RequestsClient):
    """The SDK's client, reading proxy settings from the environment once, not per call.

    requests otherwise walks the whole environment (proxies, no_proxy, netrc) on every
    request; ``build_client`` passes the proxies found at start-up explicitly instead.
    """

    def _request_internal(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(self._thread_local, "session", None) is None:
            session = requests.Session()
            session.trust_env = False
            self._thread_local.session = session
        return super()._request_internal(*args, **kwargs)


def _app_settings() -> StripeSettings:
    from flask import current_app

    return StripeSettings.from_config(current_app.config)


def _default_client() -> stripe.StripeClient:
    """The current app's client, built once per settings (the one place reading app config)."""
    from flask import current_app

    settings = _app_settings()
    cached = current_app.extensions.get(_EXTENSION_KEY)
    if cached is None or cached[0] != settings:
        cached = (settings, build_client(settings))
        current_app.extensions[_EXTENSION_KEY] = cached
    return cached[1]  # type: ignore[no-any-return]


def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the SDK, turning transport and account failures into domain errors."""
    try:
        return fn(*args, **kwargs)
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        logger.warning("stripe unreachable: %s", type(exc).__name__)
        raise PaymentProviderUnavailable(
            "The card payment service is not answering; please try again shortly.") from None
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        logger.error("stripe refused our credentials: %s", type(exc).__name__)
        raise PaymentProviderUnavailable("Card payments are not available right now.") from None
    except stripe.APIError as exc:
        logger.warning("stripe server error %s", exc.http_status)
        raise PaymentProviderUnavailable(
            "The card payment service had a problem; please try again shortly.") from None


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


# --- status mapping ---------------------------------------------------------------------------

_PRE_AUTH = {PaymentStatus.REQUIRES_PAYMENT_METHOD, PaymentStatus.REQUIRES_ACTION,
             PaymentStatus.FAILED}
_TAKEN = {PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
_HELD_OR_TAKEN = {PaymentStatus.AUTHORISED} | _TAKEN
# A payment only moves to an equal or higher rank; pre-authorisation states (rank 0) may move
# freely among themselves, as a patient retries a card on the page.
_RANK = {
    PaymentStatus.REQUIRES_PAYMENT_METHOD: 0, PaymentStatus.REQUIRES_ACTION: 0,
    PaymentStatus.FAILED: 0, PaymentStatus.AUTHORISED: 1, PaymentStatus.CANCELLED: 2,
    PaymentStatus.CAPTURED: 2, PaymentStatus.PARTIALLY_REFUNDED: 3, PaymentStatus.REFUNDED: 4,
}

_DEFAULT_DECLINE = ("Your card was declined and no money has been taken. Please try another "
                    "card, or contact your card issuer.")
_DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds. No money has been taken; please "
                          "try another card.",
    "expired_card": "Your card has expired. No money has been taken; please use another card.",
    "incorrect_cvc": "The security code (CVC) was not accepted. Please check it and try again.",
    "invalid_cvc": "The security code (CVC) was not accepted. Please check it and try again.",
    "incorrect_number": "The card number was not accepted. Please check it and try again.",
    "processing_error": "Your card could not be processed just now. No money has been taken; "
                        "please try again.",
    "payment_intent_authentication_failure": "Your bank could not confirm this payment "
                                             "(3-D Secure). No money has been taken; please try "
                                             "again or use another card.",
}


def patient_message(error: Mapping[str, Any] | None) -> str:
    """A plain-words message for a Stripe decline or payment error (never raw codes)."""
    if not error:
        return _DEFAULT_DECLINE
    for key in (error.get("decline_code"), error.get("code")):
        if key and key in _DECLINE_MESSAGES:
            return _DECLINE_MESSAGES[str(key)]
    return _DEFAULT_DECLINE


def _status_for(pi: Mapping[str, Any]) -> PaymentStatus | None:
    """Our status for a PaymentIntent; None for states with no equivalent (``processing``)."""
    status = pi.get("status")
    if status == "requires_payment_method":
        return (PaymentStatus.FAILED if pi.get("last_payment_error")
                else PaymentStatus.REQUIRES_PAYMENT_METHOD)
    return {
        "requires_confirmation": PaymentStatus.REQUIRES_PAYMENT_METHOD,
        "requires_action": PaymentStatus.REQUIRES_ACTION,
        "requires_capture": PaymentStatus.AUTHORISED,
        "succeeded": PaymentStatus.CAPTURED,
        "canceled": PaymentStatus.CANCELLED,
    }.get(str(status))


def _may_move(current: PaymentStatus, new: PaymentStatus) -> bool:
    if current is new:
        return True
    if current is PaymentStatus.CANCELLED or (current in _TAKEN
                                              and new is PaymentStatus.CANCELLED):
        return False
    return _RANK[new] >= _RANK[current]


def _charge(pi: Mapping[str, Any]) -> Mapping[str, Any] | None:
    charge = pi.get("latest_charge")
    return charge if isinstance(charge, Mapping) else None


def _captured_per_provider(pi: Mapping[str, Any], payment: Payment) -> int:
    if pi.get("status") != "succeeded":
        return 0
    if pi.get("amount_received") is not None:
        return int(pi["amount_received"])
    charge = _charge(pi)
    if charge is not None and charge.get("amount_captured") is not None:
        return int(charge["amount_captured"])
    # localstripe reports neither; keep what our own capture recorded, else assume all.
    return payment.amount_captured_minor or int(pi.get("amount") or payment.amount_minor)


def _refunded_per_provider(pi: Mapping[str, Any], captured: int) -> int:
    charge = _charge(pi)
    if charge is None or not captured:
        return 0
    # Older Stripe API versions (and localstripe) report the released remainder of a partial
    # capture as refunded; subtracting it can only under-count refunds, never over-count.
    remainder = max(0, int(charge.get("amount") or 0) - captured)
    return max(0, int(charge.get("amount_refunded") or 0) - remainder)


def _snapshot(payment: Payment) -> dict[str, Any]:
    return {"status": payment.status.value if payment.status else None,
            "amount_minor": payment.amount_minor,
            "amount_captured_minor": payment.amount_captured_minor,
            "amount_refunded_minor": payment.amount_refunded_minor}


def _apply(session: Session, payment: Payment, pi: Mapping[str, Any], *, source: str,
           captured: int | None = None, refunded: int | None = None,
           actor: User | None = None, reason: str | None = None) -> bool:
    """Move ``payment`` to the PaymentIntent's state, forward only; audit any change.

    ``captured``/``refunded`` are exact totals from our own calls; otherwise they are read from
    the PaymentIntent. Returns whether anything changed.
    """
    new_status = _status_for(pi) or payment.status
    new_captured = payment.amount_captured_minor
    new_refunded = payment.amount_refunded_minor
    if new_status in _TAKEN:
        seen = captured if captured is not None else _captured_per_provider(pi, payment)
        new_captured = min(payment.amount_minor, max(new_captured, seen))
        seen_refund = (refunded if refunded is not None
                       else _refunded_per_provider(pi, new_captured))
        new_refunded = min(new_captured, max(new_refunded, seen_refund))
        if new_refunded and new_refunded >= new_captured:
            new_status = PaymentStatus.REFUNDED
        elif new_refunded:
            new_status = PaymentStatus.PARTIALLY_REFUNDED
        else:
            new_status = PaymentStatus.CAPTURED
    if not _may_move(payment.status, new_status):
        logger.info("payment %s: ignored stale %s state %s (is %s)", payment.id, source,
                    new_status.value, payment.status.value)
        return False
    before = _snapshot(payment)
    payment.status = new_status
    payment.amount_captured_minor = new_captured
    payment.amount_refunded_minor = new_refunded
    if new_status is PaymentStatus.FAILED:
        payment.last_error = patient_message(pi.get("last_payment_error"))
    elif new_status in _HELD_OR_TAKEN:
        payment.last_error = None  # a cancelled attempt keeps its decline message as history
    after = _snapshot(payment)
    if after == before:
        return False
    session.flush()
    audit.record(session, action=f"payment.{new_status.value}", entity_type="payment",
                 entity_id=payment.id, actor=actor, before=before,
                 after={**after, "order_id": payment.order_id, "source": source},
                 reason=reason)
    logger.info("payment %s (order %s): %s -> %s via %s", payment.id, payment.order_id,
                before["status"], new_status.value, source)
    return True


# --- reading rows -----------------------------------------------------------------------------


_ORDER_COLUMNS = [column.key for column in sa_inspect(Order).column_attrs]


def _lock_order(session: Session, order: Order) -> None:
    # Serialises checkouts of one order: the second waits here until the first commits and
    # then finds its Payment row. Held for one or two short Stripe calls.
    # Re-reads the order's columns under the lock (its status may have moved on since the
    # caller loaded it), leaving loaded collections as they are.
    session.flush()
    session.refresh(order, attribute_names=_ORDER_COLUMNS, with_for_update=True)


def _payments_of(session: Session, order: Order, *, lock: bool) -> list[Payment]:
    query = (select(Payment).where(Payment.order_id == order.id, Payment.provider == PROVIDER)
             .order_by(Payment.id))
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return list(session.scalars(query).all())


def current_payment(session: Session, order: Order) -> Payment | None:
    """The order's newest card payment (None for orders that needed none)."""
    payments = _payments_of(session, order, lock=False)
    return payments[-1] if payments else None


def _retrieve(client: stripe.StripeClient, payment_intent_id: str) -> dict[str, Any]:
    pi = _call(client.v1.payment_intents.retrieve, payment_intent_id,
               {"expand": ["latest_charge"]})
    return _as_dict(pi)


def _key(payment: Payment, *parts: object) -> str:
    return ":".join(["dispensary", "payment", str(payment.id), payment.provider_payment_id,
                     *map(str, parts)])


# --- customers and saved cards ----------------------------------------------------------------


def ensure_customer(session: Session, patient: PatientProfile, *,
                    client: stripe.StripeClient | None = None) -> str:
    """The patient's Stripe Customer id, creating the Customer once.

    Only the patient id goes to Stripe (no name, e-mail or address).
    """
    if patient.stripe_customer_id:
        return patient.stripe_customer_id
    session.flush()
    # Lock the patient so two checkouts of one patient make one Customer; re-read under it.
    existing = session.scalar(select(PatientProfile.stripe_customer_id)
                              .where(PatientProfile.id == patient.id).with_for_update())
    if existing:
        patient.stripe_customer_id = existing
        return existing
    client = client or _default_client()
    created = patient.created_at.timestamp() if patient.created_at else 0
    key = f"dispensary:patient:{patient.id}:{created:.0f}:customer"
    customer = _call(client.v1.customers.create,
                     {"metadata": {"patient_id": str(patient.id)}}, {"idempotency_key": key})
    patient.stripe_customer_id = str(customer.id)
    session.flush()
    audit.record(session, action="payment.customer_created", entity_type="patient",
                 entity_id=patient.id, after={"stripe_customer_id": customer.id})
    return patient.stripe_customer_id


def create_setup_intent(session: Session, patient: PatientProfile, *,
                        client: stripe.StripeClient | None = None) -> str:
    """Start saving a card for later: the SetupIntent's client secret, for Stripe.js."""
    client = client or _default_client()
    customer_id = ensure_customer(session, patient, client=client)
    intent = _call(client.v1.setup_intents.create, {
        "customer": customer_id, "payment_method_types": ["card"], "usage": "off_session",
        "metadata": {"patient_id": str(patient.id)}})
    return str(intent.client_secret)


def list_saved_cards(session: Session, patient: PatientProfile, *,
                     client: stripe.StripeClient | None = None) -> list[CardSummary]:
    """The patient's saved cards (none before a Customer exists)."""
    if not patient.stripe_customer_id:
        return []
    client = client or _default_client()
    methods = _call(client.v1.payment_methods.list,
                    {"customer": patient.stripe_customer_id, "type": "card", "limit": 100})
    cards = []
    for method in methods.data:
        card = _as_dict(method).get("card") or {}
        cards.append(CardSummary(id=str(method.id), brand=str(card.get("brand", "card")),
                                 last4=str(card.get("last4", "")),
                                 exp_month=int(card.get("exp_month") or 0),
                                 exp_year=int(card.get("exp_year") or 0)))
    return cards


def remove_saved_card(session: Session, patient: PatientProfile, card_id: str, *,
                      client: stripe.StripeClient | None = None) -> None:
    """Forget one of the patient's saved cards; another customer's card is 'not found'."""
    client = client or _default_client()
    if not patient.stripe_customer_id:
        raise NotFound("No such saved card.")
    try:
        method = _call(client.v1.payment_methods.retrieve, card_id)
    except stripe.InvalidRequestError:
        raise NotFound("No such saved card.") from None
    if _as_dict(method).get("customer") != patient.stripe_customer_id:
        raise NotFound("No such saved card.")
    _call(client.v1.payment_methods.detach, card_id)
    audit.record(session, action="payment.card_removed", entity_type="patient",
                 entity_id=patient.id, before={"card_id": card_id})


# --- authorise --------------------------------------------------------------------------------


def authorise(session: Session, order: Order, *, payment_method: str | None = None,
              save_card: bool = False, return_url: str | None = None,
              client: stripe.StripeClient | None = None) -> PaymentResult:
    """Hold the order's total on the patient's card (a manual-capture PaymentIntent).

    Safe to retry and to call concurrently for one order: the order row is locked and an
    existing live PaymentIntent is reused, so an order never gets a second one while the first
    can still be paid. Declines do not raise: the result's payment is FAILED with a message for
    the patient in ``last_error`` (see ``PaymentResult.raise_if_declined``).

    Args:
        payment_method: a PaymentMethod id (``pm_...``, e.g. a saved card) to confirm with now;
            without it the page confirms with Stripe.js using ``client_secret`` (pass
            ``setup_future_usage`` there to save the card).
        save_card: attach ``payment_method`` to the patient's Customer for later orders.
        return_url: where Stripe sends the patient back after a redirect-based 3-D Secure
            check (localstripe does not accept it; cards use Stripe.js in the page instead).

    Returns:
        ``PaymentResult(payment=None)`` for zero-total orders; otherwise the Payment row, the
        client secret (3-D Secure or card entry on the page) and any redirect URL.

    Raises:
        PaymentProviderUnavailable: Stripe is unreachable or not configured.
    """
    if order.total_minor <= 0:
        return PaymentResult(payment=None)
    client = client or _default_client()
    _lock_order(session, order)
    payments = _payments_of(session, order, lock=True)
    live = [p for p in payments if p.status is not PaymentStatus.FAILED
            and p.status is not PaymentStatus.CANCELLED]
    if live:
        return _continue(session, live[-1], order, payment_method, return_url, client)
    for failed in payments:
        if failed.status is PaymentStatus.FAILED:
            _cancel_at_provider(session, failed, client, reason="superseded by a new attempt")

    patient = session.get(PatientProfile, order.patient_id)
    if patient is None:  # pragma: no cover - a foreign key guarantees it
        raise NotFound("The order's patient does not exist.")
    customer_id = ensure_customer(session, patient, client=client)
    if payment_method and save_card:
        _attach(client, payment_method, customer_id)
    params: dict[str, Any] = {
        "amount": order.total_minor,
        "currency": order.currency.lower(),
        "capture_method": "manual",
        "customer": customer_id,
        "payment_method_types": ["card"],
        "metadata": {"order_id": str(order.id), "order_reference": order.reference},
    }
    if payment_method:
        # The card is known: create and confirm in one round trip (the PaymentIntent comes
        # back authorised, declined, or asking for 3-D Secure) instead of create, confirm
        # and retrieve.
        params.update(payment_method=payment_method, confirm=True)
    created = order.created_at.timestamp() if order.created_at else 0
    # Same order, attempt and card -> same key: Stripe answers a lost-commit retry with the
    # PaymentIntent it already made. (A different card after a lost commit makes a new one.)
    key = (f"dispensary:order:{order.id}:{order.reference}:{created:.0f}:pi:{len(payments)}:"
           f"{payment_method or 'page'}")
    try:
        pi = _as_dict(_call(client.v1.payment_intents.create, params, {"idempotency_key": key}))
    except stripe.CardError as exc:
        # A decline while confirming: the PaymentIntent exists and is recorded as failed.
        # Without one (a PaymentMethod that cannot be used at all) there is nothing to record.
        declined = _declined_intent(client, exc)
        if declined is None:
            raise PaymentDeclined(patient_message(_error_dict(exc))) from None
        pi = declined
    except stripe.InvalidRequestError as exc:
        logger.warning("stripe refused a PaymentIntent for order %s: %s", order.id, exc.code)
        if payment_method and (exc.param == "payment_method" or exc.http_status == 404):
            raise _unusable_card() from None
        raise PaymentProviderError("The card payment could not be started.") from None
    payment = Payment(order=order, provider=PROVIDER, provider_payment_id=pi["id"],
                      status=_status_for(pi) or PaymentStatus.REQUIRES_PAYMENT_METHOD,
                      currency=order.currency.upper(), amount_minor=order.total_minor)
    if payment_method:
        # Recorded as created first, then moved to the state the confirmation reached, so the
        # audit trail reads the same as for a payment confirmed later on the page.
        payment.status = PaymentStatus.REQUIRES_PAYMENT_METHOD
    session.add(payment)
    session.flush()
    audit.record(session, action="payment.created", entity_type="payment", entity_id=payment.id,
                 after={**_snapshot(payment), "order_id": order.id,
                        "provider_payment_id": payment.provider_payment_id})
    if payment_method:
        _apply(session, payment, pi, source="authorise")
    return _result(payment, pi)


def _declined_intent(client: stripe.StripeClient,
                     exc: stripe.CardError) -> dict[str, Any] | None:
    """The PaymentIntent a create-and-confirm call declined, read back from Stripe.

    Stripe names it in the error (``error.payment_intent``); localstripe names only the
    charge, whose ``payment_intent`` leads to it.
    """
    error = exc.error
    intent = getattr(error, "payment_intent", None) if error is not None else None
    intent_id = intent if isinstance(intent, str) or intent is None else getattr(intent, "id",
                                                                                  None)
    if not intent_id and error is not None and getattr(error, "charge", None):
        try:
            charge = _call(client.v1.charges.retrieve, str(error.charge))
        except stripe.StripeError:
            return None
        intent_id = _as_dict(charge).get("payment_intent")
    if not isinstance(intent_id, str) or not intent_id:
        return None
    try:
        return _retrieve(client, intent_id)
    except stripe.StripeError:
        return None


def _continue(session: Session, payment: Payment, order: Order, payment_method: str | None,
              return_url: str | None, client: stripe.StripeClient) -> PaymentResult:
    """A retried checkout of an order that already has a live PaymentIntent."""
    if payment.status not in _PRE_AUTH:
        return PaymentResult(payment=payment)  # already authorised (or later): nothing to do
    pi = _retrieve(client, payment.provider_payment_id)
    _apply(session, payment, pi, source="authorise")
    if payment.status not in _PRE_AUTH:
        return _result(payment, pi)
    if pi.get("status") in {"requires_payment_method", "requires_confirmation"}:
        changes: dict[str, Any] = {}
        if pi.get("amount") != order.total_minor:
            changes["amount"] = order.total_minor
            payment.amount_minor = order.total_minor
        if payment_method and pi.get("payment_method") != payment_method:
            changes["payment_method"] = payment_method
        if changes:
            pi = _as_dict(_call(client.v1.payment_intents.update,
                                payment.provider_payment_id, changes))
        if payment_method:
            pi = _confirm(session, payment, client, return_url)
    return _result(payment, pi)


def _confirm(session: Session, payment: Payment, client: stripe.StripeClient,
             return_url: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"return_url": return_url} if return_url else {}
    try:
        _call(client.v1.payment_intents.confirm, payment.provider_payment_id, params,
              {"idempotency_key": _key(payment, "confirm", payment.version)})
    except stripe.CardError as exc:
        logger.info("payment %s declined (%s)", payment.id, exc.code)
    except stripe.InvalidRequestError as exc:
        logger.warning("payment %s: confirm refused (%s)", payment.id, exc.code)
    pi = _retrieve(client, payment.provider_payment_id)
    _apply(session, payment, pi, source="authorise")
    return pi


def _attach(client: stripe.StripeClient, payment_method: str, customer_id: str) -> None:
    try:
        _call(client.v1.payment_methods.attach, payment_method, {"customer": customer_id})
    except stripe.CardError as exc:
        raise PaymentDeclined(patient_message(_error_dict(exc))) from None
    except stripe.InvalidRequestError:
        raise _unusable_card() from None


def _unusable_card() -> InvalidRequest:
    return InvalidRequest("That card cannot be used.", errors=[
        {"field": "payment_method", "message": "Unknown or unusable card."}])


def _error_dict(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body or {}
    error = body.get("error") if isinstance(body, Mapping) else None
    return dict(error) if isinstance(error, Mapping) else {"code": exc.code}


def _result(payment: Payment, pi: Mapping[str, Any]) -> PaymentResult:
    secret = pi.get("client_secret") if payment.status in _PRE_AUTH - {
        PaymentStatus.FAILED} else None
    action = pi.get("next_action") or {}
    url = None
    if action.get("type") == "redirect_to_url":
        url = (action.get("redirect_to_url") or {}).get("url")
    return PaymentResult(payment=payment, client_secret=secret, next_action_url=url)


def refresh(session: Session, payment: Payment, *,
            client: stripe.StripeClient | None = None) -> Payment:
    """Re-read the PaymentIntent (after 3-D Secure or confirmation in the page)."""
    client = client or _default_client()
    session.flush()
    session.execute(select(Payment.id).where(Payment.id == payment.id).with_for_update())
    session.refresh(payment)
    _apply(session, payment, _retrieve(client, payment.provider_payment_id), source="refresh")
    return payment


# --- capture, cancel, refund ------------------------------------------------------------------


def capture(session: Session, order: Order, *, amount_minor: int | None = None,
            actor: User | None = None, client: stripe.StripeClient | None = None,
            ) -> Payment | None:
    """Take the money at dispatch: all of it, or ``amount_minor`` for a partial supply.

    Idempotent: a captured payment is returned as it is. Returns None for orders that needed
    no payment.

    Raises:
        PaymentStateConflict: nothing is authorised (declined, cancelled, awaiting 3-D Secure).
        InvalidPaymentAmount: not 0 < amount_minor <= the authorised amount (to take nothing,
            cancel instead).
    """
    if order.total_minor <= 0 and current_payment(session, order) is None:
        return None
    client = client or _default_client()
    payment = _latest_locked(session, order)
    if payment.status in _TAKEN:
        return payment
    if payment.status is not PaymentStatus.AUTHORISED:
        _apply(session, payment, _retrieve(client, payment.provider_payment_id),
               source="capture")
        if payment.status in _TAKEN:
            return payment
        if payment.status is not PaymentStatus.AUTHORISED:
            raise PaymentStateConflict(f"The payment is {payment.status.value}, not authorised; "
                                       "there is nothing to capture.", payment_id=payment.id)
    amount = payment.amount_minor if amount_minor is None else amount_minor
    if not 0 < amount <= payment.amount_minor:
        raise InvalidPaymentAmount(
            f"Capture between 1 and {payment.amount_minor} (minor units); to take nothing, "
            "cancel the payment.", errors=[{"field": "amount_minor", "message": "Out of range."}])
    try:
        pi = _as_dict(_call(client.v1.payment_intents.capture, payment.provider_payment_id,
                            {"amount_to_capture": amount,
                             "expand": ["latest_charge"]},
                            {"idempotency_key": _key(payment, "capture", amount)}))
    except stripe.StripeError as exc:
        # Maybe captured already (our commit was lost) or cancelled meanwhile: re-read.
        logger.warning("payment %s: capture refused (%s)", payment.id, exc.code)
        pi = _retrieve(client, payment.provider_payment_id)
        if pi.get("status") != "succeeded":
            _apply(session, payment, pi, source="capture")
            raise PaymentStateConflict("The payment could not be captured.",
                                       payment_id=payment.id) from None
    exact = pi.get("amount_received")
    _apply(session, payment, pi, source="capture", actor=actor,
           captured=int(exact) if exact is not None else amount,
           reason=None if amount == payment.amount_minor else "partial supply")
    return payment


def cancel(session: Session, order: Order, *, reason: str, actor: User | None = None,
           client: stripe.StripeClient | None = None) -> Payment | None:
    """Release an uncaptured authorisation (rejected item, no stock, patient cancelled).

    Cancels every PaymentIntent of the order that could still take money. Idempotent.
    Returns the newest payment, or None if the order had none.

    Raises:
        PaymentStateConflict: the money was already captured (refund instead).
    """
    payments = _payments_of(session, order, lock=True)
    if not payments:
        return None
    latest = payments[-1]
    if latest.status in _TAKEN:
        raise PaymentStateConflict("The payment was already captured; refund it instead.",
                                   payment_id=latest.id)
    client = client or _default_client()
    for payment in payments:
        if payment.status in _PRE_AUTH or payment.status is PaymentStatus.AUTHORISED:
            _cancel_at_provider(session, payment, client, reason=reason, actor=actor)
    if latest.status in _TAKEN:
        raise PaymentStateConflict("The payment was captured meanwhile; refund it instead.",
                                   payment_id=latest.id)
    return latest


def _cancel_at_provider(session: Session, payment: Payment, client: stripe.StripeClient, *,
                        reason: str, actor: User | None = None) -> None:
    try:
        pi = _as_dict(_call(client.v1.payment_intents.cancel, payment.provider_payment_id, {},
                            {"idempotency_key": _key(payment, "cancel")}))
    except stripe.StripeError as exc:
        logger.info("payment %s: cancel refused (%s); re-reading", payment.id, exc.code)
        pi = _retrieve(client, payment.provider_payment_id)
    _apply(session, payment, pi, source="cancel", actor=actor, reason=reason)


def refund(session: Session, order: Order, *, amount_minor: int, reason: str,
           actor: User | None = None, client: stripe.StripeClient | None = None) -> Payment:
    """Give back ``amount_minor`` more of a captured payment (partial supply, returns).

    Safe to retry: before refunding, Stripe's refunds of this PaymentIntent are checked for one
    made from the same starting point (``metadata.refunded_before_minor``), which a lost commit
    leaves behind; it is recorded instead of refunding twice.

    Raises:
        PaymentStateConflict: nothing was captured.
        InvalidPaymentAmount: not 0 < amount_minor <= captured - refunded.
    """
    client = client or _default_client()
    payments = [p for p in _payments_of(session, order, lock=True) if p.status in _TAKEN]
    if not payments:
        raise PaymentStateConflict("Nothing was captured for this order; cancel instead.")
    payment = payments[-1]
    refundable = payment.amount_captured_minor - payment.amount_refunded_minor
    if not 0 < amount_minor <= refundable:
        raise InvalidPaymentAmount(
            f"Refund between 1 and {refundable} (minor units).",
            errors=[{"field": "amount_minor", "message": "Out of range."}])
    before_minor = payment.amount_refunded_minor
    marker = {"payment_id": str(payment.id), "refunded_before_minor": str(before_minor)}
    existing = _call(client.v1.refunds.list,
                     {"payment_intent": payment.provider_payment_id, "limit": 100})
    done = [r for r in map(_as_dict, existing.data)
            if {k: (r.get("metadata") or {}).get(k) for k in marker} == marker
            and r.get("status") not in {"failed", "canceled"}]
    if done:
        refunded_now = int(done[0]["amount"])
        logger.info("payment %s: refund %s already made", payment.id, done[0]["id"])
    else:
        created = _call(client.v1.refunds.create,
                        {"payment_intent": payment.provider_payment_id, "amount": amount_minor,
                         "metadata": {**marker, "order_id": str(order.id)}},
                        {"idempotency_key": _key(payment, "refund", before_minor,
                                                 amount_minor)})
        refunded_now = int(created.amount)
    pi = _retrieve(client, payment.provider_payment_id)
    _apply(session, payment, pi, source="refund", actor=actor, reason=reason,
           captured=payment.amount_captured_minor, refunded=before_minor + refunded_now)
    return payment


def _latest_locked(session: Session, order: Order) -> Payment:
    payments = _payments_of(session, order, lock=True)
    if not payments:
        raise PaymentStateConflict("This order has no card payment.")
    return payments[-1]


# --- webhooks ---------------------------------------------------------------------------------

_CHARGE_EVENTS = {"charge.refunded", "charge.captured", "charge.refund.updated",
                  "charge.succeeded", "charge.failed"}


def handle_webhook(session: Session, payload: bytes, signature_header: str, *,
                   client: stripe.StripeClient | None = None,
                   webhook_secret: str | None = None) -> WebhookOutcome:
    """Verify, store once and apply a Stripe event.

    The event only says *that* something changed: the PaymentIntent is re-read from Stripe and
    applied forward-only, so duplicates, replays and out-of-order deliveries are harmless.

    Raises:
        InvalidSignature: the ``Stripe-Signature`` header does not match (or is too old).
        InvalidWebhookPayload: not a Stripe event.
        PaymentProviderUnavailable: Stripe could not be asked (Stripe will retry the event).
    """
    secret = webhook_secret if webhook_secret is not None else _app_settings().webhook_secret
    if not secret:
        raise PaymentProviderUnavailable("Webhooks are not configured (STRIPE_WEBHOOK_SECRET).")
    try:
        text = payload.decode("utf-8")
        stripe.WebhookSignature.verify_header(text, signature_header or "", secret,
                                              tolerance=WEBHOOK_TOLERANCE_S)
    except (UnicodeDecodeError, stripe.SignatureVerificationError):
        raise InvalidSignature("The webhook signature is not valid.") from None
    try:
        event = json.loads(text)
        event_id, event_type = str(event["id"]), str(event["type"])
        obj = event["data"]["object"]
        if not isinstance(obj, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise InvalidWebhookPayload("The webhook body is not a Stripe event.") from None

    created = event.get("created")
    row = WebhookEvent(provider=PROVIDER, event_id=event_id, event_type=event_type[:100],
                       payload=_stored_payload(event, obj),
                       event_created_at=(datetime.fromtimestamp(created, UTC)
                                         if isinstance(created, int | float) else None))
    try:
        # A concurrent delivery of the same event waits on the unique index, then lands here.
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        logger.info("webhook %s (%s) already received", event_id, event_type)
        return WebhookOutcome("duplicate", event_id, event_type)

    outcome = _apply_event(session, event_type, obj, client)
    row.processed_at = utcnow()
    row.outcome = outcome.outcome
    session.flush()
    return WebhookOutcome(outcome.outcome, event_id, event_type, outcome.payment_id)


# Enough of an event to audit it; billing details and the like are not kept.
_KEPT_EVENT_FIELDS = ("id", "type", "created", "api_version", "livemode")
_KEPT_OBJECT_FIELDS = ("id", "object", "status", "amount", "amount_capturable",
                       "amount_received", "amount_refunded", "captured", "currency",
                       "payment_intent", "created")


def _stored_payload(event: Mapping[str, Any], obj: Mapping[str, Any]) -> dict[str, Any]:
    kept = {k: event[k] for k in _KEPT_EVENT_FIELDS if k in event}
    kept["data"] = {"object": {k: obj[k] for k in _KEPT_OBJECT_FIELDS if k in obj}}
    return kept


@dataclass(frozen=True)
class _Applied:
    outcome: str
    payment_id: int | None = None


def _apply_event(session: Session, event_type: str, obj: Mapping[str, Any],
                 client: stripe.StripeClient | None) -> _Applied:
    if event_type.startswith("payment_intent."):
        pi_id = obj.get("id")
    elif event_type in _CHARGE_EVENTS:
        pi_id = obj.get("payment_intent")
    else:
        return _Applied("ignored")
    if not isinstance(pi_id, str) or not pi_id:
        return _Applied("ignored")
    payment = session.scalar(select(Payment).where(Payment.provider == PROVIDER,
                                                   Payment.provider_payment_id == pi_id)
                             .with_for_update().execution_options(populate_existing=True))
    if payment is None:
        logger.info("webhook for unknown PaymentIntent %s", pi_id)
        return _Applied("unknown_payment")
    try:
        pi = _retrieve(client or _default_client(), pi_id)
    except stripe.InvalidRequestError:
        logger.warning("webhook: PaymentIntent %s of payment %s not found at Stripe", pi_id,
                       payment.id)
        return _Applied("ignored", payment.id)
    changed = _apply(session, payment, pi, source=f"webhook:{event_type}")
    if payment.status is PaymentStatus.AUTHORISED:
        _move_paid_order_on(session, payment)
    return _Applied("processed" if changed else "unchanged", payment.id)


def _move_paid_order_on(session: Session, payment: Payment) -> None:
    """The card was authorised (3-D Secure finished) but the page never came back to say
    so: move the order on as its own confirmation would, instead of letting the unpaid-hold
    sweep cancel a paid order. An order another request holds is left to that request
    (skip locked: the webhook never waits on an order lock while holding the payment's)."""
    from .orders import mark_paid

    order = session.scalar(select(Order).where(Order.id == payment.order_id,
                                               Order.status == OrderStatus.PLACED)
                           .with_for_update(skip_locked=True))
    if order is not None:
        mark_paid(session, order, actor=None)


def payment_intent_count(session: Session, order: Order) -> int:
    """How many PaymentIntents this order has had (retries after declines included)."""
    return int(session.scalar(select(func.count()).select_from(Payment)
                              .where(Payment.order_id == order.id)) or 0)
