"""A real localstripe server for the payments tests, and helpers to drive it.

localstripe runs once per test session as a subprocess on a free loopback port. Its store is
kept in memory only: the stock server pickles everything to /tmp/localstripe.pickle after each
write, which is slow and shared with anyone else running localstripe on the machine.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import stripe
from flask import Flask

from pharmacy.models import Order, PatientProfile, Role
from tests.factories import PatientFactory, PharmacyFactory, UserFactory

API_KEY = "sk_test_dispensary_payments"
WEBHOOK_SECRET = "whsec_test_dispensary_payments"

_SERVER = """
import sys
import localstripe.resources
localstripe.resources.Store.dump_to_disk = lambda self: None  # memory only (see conftest)
from localstripe.server import start
sys.argv = ["localstripe", "--port", sys.argv[1], "--from-scratch"]
start()
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def localstripe_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("localstripe") / "server.log"
    for _attempt in range(3):  # another process may take the port between probe and bind
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)],
                                    stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/js.stripe.com/v3/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        else:
            proc.kill()
            proc.wait(5)
            continue
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return
    pytest.fail(f"localstripe did not start; see {log_path}: {log_path.read_text()[-2000:]}")


@pytest.fixture()
def stripe_config(app: Flask, localstripe_url: str,
                  monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point the session app at localstripe for one test (the service reads app.config)."""
    settings = {"STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": localstripe_url,
                "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    for key, value in settings.items():
        monkeypatch.setitem(app.config, key, value)
    return settings


@pytest.fixture(scope="session")
def stripe_client(localstripe_url: str) -> stripe.StripeClient:
    """The tests' own view of localstripe (what a Stripe dashboard would show)."""
    return stripe.StripeClient(API_KEY, base_addresses={"api": localstripe_url},
                               max_network_retries=0)


@pytest.fixture()
def card(stripe_client: stripe.StripeClient):
    """Make a card PaymentMethod at localstripe from a test card number."""

    def _make(number: str = "4242424242424242") -> str:
        method = stripe_client.v1.payment_methods.create({
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"}})
        return str(method.id)

    return _make


VISA = "4242424242424242"
DECLINED = "4000000000000341"  # attaches, then declines when charged
THREE_D_SECURE = "4000002500003155"


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
