"""A real localstripe server for every test that pays, and the fixtures pointing the app at it.

Defined once (imported by the root conftest) so one server serves the whole run.

localstripe runs once per test session as a subprocess on a free loopback port. Its store is
kept in memory only: the stock server pickles everything to /tmp/localstripe.pickle after each
write, which is slow and shared with anyone else running localstripe on the machine.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
import stripe
from flask import Flask

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


