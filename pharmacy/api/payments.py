"""Payments: Stripe's webhook (signature-verified, no bearer token) and patients' saved cards."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from ..errors import DomainError, Forbidden
from ..extensions import db
from ..models import PatientProfile, Role
from ..schemas.payments import (
    CardSchema,
    SetupIntentSchema,
    StripeEventSchema,
    WebhookReceiptSchema,
)
from ..services import payments
from .security import BEARER_DOC, current_api_user, require_roles

blp = Blueprint("api_payments", __name__, url_prefix="/api/v1/payments",
                description="Card payments: the payment provider's webhook")
cards_blp = Blueprint("api_me_cards", __name__, url_prefix="/api/v1/me/cards",
                      description="The signed-in patient's saved cards")
cards_blp.before_request(require_roles(Role.PATIENT))

# Stripe events are a few kB; refuse anything far larger before reading it.
MAX_WEBHOOK_BYTES = 256 * 1024
_EVENT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": StripeEventSchema}}}}
_CARD_ID = "<string(maxlength=100):card_id>"


class WebhookTooLarge(DomainError):
    status, code, title = 413, "payload_too_large", "Content Too Large"


@blp.route("/stripe/webhook")
class StripeWebhook(MethodView):
    @blp.doc(security=[], **_EVENT_BODY)
    @blp.response(200, WebhookReceiptSchema)
    @blp.alt_response(400, description="Bad signature (invalid_signature) or not an event")
    @blp.alt_response(413, description="Body too large")
    @blp.alt_response(503, description="Stripe unreachable or webhooks not configured; "
                      "Stripe retries later")
    def post(self) -> Any:
        """Receive a Stripe event (verified by its Stripe-Signature header, applied once)."""
        if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
            raise WebhookTooLarge(f"Webhook bodies are limited to {MAX_WEBHOOK_BYTES} bytes.")
        # The signature covers the exact bytes sent, so read the raw body, not parsed JSON.
        payload = request.stream.read(MAX_WEBHOOK_BYTES + 1)
        if len(payload) > MAX_WEBHOOK_BYTES:
            raise WebhookTooLarge(f"Webhook bodies are limited to {MAX_WEBHOOK_BYTES} bytes.")
        outcome = payments.handle_webhook(db.session, payload,
                                          request.headers.get("Stripe-Signature", ""))
        db.session.commit()
        return {"received": True, "outcome": outcome.outcome}


def _patient() -> PatientProfile:
    patient = current_api_user().patient
    if patient is None:
        raise Forbidden("This account has no patient record.")
    return patient


@cards_blp.route("")
class CardList(MethodView):
    @cards_blp.doc(**BEARER_DOC)
    @cards_blp.response(200, CardSchema(many=True))
    @cards_blp.alt_response(401, description="Missing or invalid token")
    @cards_blp.alt_response(403, description="Patients only")
    @cards_blp.alt_response(503, description="Card payments unavailable")
    def get(self) -> Any:
        """The patient's saved cards (brand, last four digits, expiry)."""
        return payments.list_saved_cards(db.session, _patient())


@cards_blp.route("/setup-intent")
class CardSetupIntent(MethodView):
    @cards_blp.doc(**BEARER_DOC)
    @cards_blp.response(201, SetupIntentSchema)
    @cards_blp.alt_response(401, description="Missing or invalid token")
    @cards_blp.alt_response(403, description="Patients only")
    @cards_blp.alt_response(503, description="Card payments unavailable")
    def post(self) -> Any:
        """Start saving a card: a SetupIntent client secret for Stripe.js in the page."""
        secret = payments.create_setup_intent(db.session, _patient())
        db.session.commit()  # the patient's Stripe Customer id, made on first use
        return {"client_secret": secret}


@cards_blp.route(f"/{_CARD_ID}")
class CardItem(MethodView):
    @cards_blp.doc(**BEARER_DOC)
    @cards_blp.response(204)
    @cards_blp.alt_response(401, description="Missing or invalid token")
    @cards_blp.alt_response(403, description="Patients only")
    @cards_blp.alt_response(404, description="Not one of the patient's cards")
    @cards_blp.alt_response(503, description="Card payments unavailable")
    def delete(self, card_id: str) -> None:
        """Forget a saved card."""
        payments.remove_saved_card(db.session, _patient(), card_id)
        db.session.commit()
