"""Helpers for the payments tests (the localstripe fixtures live in tests/stripe_server.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
import requests
import stripe
from flask import Flask

from pharmacy.models import Order, PatientProfile, Role
from tests.factories import PatientFactory, PharmacyFactory, UserFactory
from tests.stripe_server import (  # noqa: F401  (re-exported for the tests' imports)
    API_KEY,
    DECLINED,
    THREE_D_SECURE,
    VISA,
    WEBHOOK_SECRET,
)


@pytest.fixture()
def make_order(db):
    """An order with a unique reference (localstripe keeps PaymentIntents across tests)."""
    pharmacy = None

    def _make(total_minor: int = 1250, patient: PatientProfile | None = None) -> Order:
        nonlocal pharmacy
        pharmacy = pharmacy or PharmacyFactory()
        patient = patient or PatientFactory()
        order = Order(reference=f"T{uuid.uuid4().hex[:12].upper()}", patient_id=patient.id,
                      pharmacy_id=pharmacy.id, currency="GBP", subtotal_minor=total_minor,
                      total_minor=total_minor)
        db.session.add(order)
        db.session.flush()
        return order

    return _make


@pytest.fixture()
def patient_user(db):
    """A patient who can sign in to the API (password: the factories' default)."""
    user = UserFactory(role=Role.PATIENT)
    patient = PatientFactory(user_id=user.id)
    db.session.commit()
    return user, patient


def intents_for(client: stripe.StripeClient, order: Order) -> list[dict[str, Any]]:
    """Every PaymentIntent localstripe holds for this order."""
    found = client.v1.payment_intents.list({"limit": 100})
    intents = [pi.to_dict() for pi in found.auto_paging_iter()]
    return [pi for pi in intents
            if (pi.get("metadata") or {}).get("order_reference") == order.reference]


def pass_three_d_secure(localstripe_url: str, payment_intent_id: str, client_secret: str) -> None:
    """What localstripe's Stripe.js does when the patient passes the bank's check."""
    requests.post(f"{localstripe_url}/v1/payment_intents/{payment_intent_id}/_authenticate",
                  data={"client_secret": client_secret, "success": "true"},
                  auth=(API_KEY, ""), timeout=10).raise_for_status()


def signed(event: dict[str, Any], secret: str = WEBHOOK_SECRET,
           timestamp: int | None = None) -> tuple[bytes, str]:
    """A webhook body and its Stripe-Signature header (t=<unix>,v1=<HMAC-SHA256>)."""
    payload = json.dumps(event).encode()
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return payload, f"t={t},v1={digest}"


def event_for(obj: dict[str, Any], event_type: str) -> dict[str, Any]:
    return {"id": f"evt_{uuid.uuid4().hex[:16]}", "object": "event", "type": event_type,
            "created": int(time.time()), "livemode": False, "data": {"object": obj}}


@pytest.fixture()
def api_client(app: Flask, client, stripe_config: dict[str, str]):  # type: ignore[no-untyped-def]
    """A test client for the payments endpoints, with Stripe pointed at localstripe.

    Uses the session app once ``pharmacy.api.register_api`` registers the payments blueprints;
    until then, a small app with only those blueprints on the same database and settings.
    """
    if "api_payments" in app.blueprints:
        yield client
        return
    from pharmacy.api import payments as payments_api
    from pharmacy.errors import register_error_handlers
    from pharmacy.extensions import ProblemApi
    from pharmacy.extensions import db as flask_db

    test_app = Flask("pharmacy")
    test_app.config.from_mapping(app.config)
    flask_db.init_app(test_app)
    api = ProblemApi(test_app, spec_kwargs={"components": {"securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer"}}}})
    api.register_blueprint(payments_api.blp)
    api.register_blueprint(payments_api.cards_blp)
    register_error_handlers(test_app)
    yield test_app.test_client()
    with test_app.app_context():
        flask_db.engine.dispose()
