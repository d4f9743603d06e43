from __future__ import annotations

import re

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

_CSRF = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path)
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def web_login(client: FlaskClient, email: str, password: str) -> TestResponse:
    token = csrf_token(client)
    return client.post("/login", data={"email": email, "password": password,
                                       "csrf_token": token})


def api_token(client: FlaskClient, email: str, password: str) -> str:
    response = client.post("/api/v1/auth/token", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["access_token"])


def shopper(db, pharmacy, *, slot_capacity: int):  # type: ignore[no-untyped-def]
    """A patient account nominating ``pharmacy``, with a located address and tomorrow's
    delivery slot there (committed). Returns (user, patient, address, slot)."""
    from datetime import UTC, datetime, timedelta

    from pharmacy.models import Address, DeliverySlot, Role
    from tests.factories import PatientFactory, UserFactory

    user = UserFactory(role=Role.PATIENT)
    patient = PatientFactory(user_id=user.id, nominated_pharmacy_id=pharmacy.id)
    address = Address(patient=patient, line1="1 Test Street", city="Leeds",
                      postcode="LS1 1AA", latitude=53.8, longitude=-1.55)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    slot = DeliverySlot(pharmacy_id=pharmacy.id, starts_at=start,
                        ends_at=start + timedelta(hours=2), cutoff_at=start - timedelta(hours=2),
                        capacity=slot_capacity, fridge_capacity=0)
    db.session.add_all([address, slot])
    db.session.commit()
    return user, patient, address, slot


def run_outbox(db, prefix: str) -> None:  # type: ignore[no-untyped-def]
    """Run, in this process, the outbox jobs a request left (keys starting with ``prefix``):
    tests have no worker."""
    from sqlalchemy import select

    from pharmacy.jobs.outbox import run_message
    from pharmacy.models import OutboxMessage

    for message_id in db.session.scalars(select(OutboxMessage.id).where(
            OutboxMessage.key.like(f"{prefix}%"), OutboxMessage.completed_at.is_(None))
            .order_by(OutboxMessage.id)).all():
        run_message(message_id)


class CapturingBackend:
    """A notification backend that keeps what it is given (registration mail is sent at
    once, not kept in the notifications table)."""

    name = "capture"
    channels = None

    def __init__(self) -> None:
        self.messages: list[object] = []

    def open(self) -> None:
        return None

    def send(self, message: object) -> None:
        self.messages.append(message)

    def close(self) -> None:
        return None


def registration_mail(db) -> list:  # type: ignore[no-untyped-def,type-arg]
    """Run the registration-mail jobs a request left, and return what they sent."""
    from unittest import mock

    capture = CapturingBackend()
    with mock.patch("pharmacy.services.notify.backend_from_config", lambda config: capture):
        run_outbox(db, "registration-mail:")
    return capture.messages


def register_and_confirm(client: FlaskClient, db, data: dict[str, str]) -> TestResponse:  # type: ignore[no-untyped-def]
    """Register on the web page, open the link e-mailed to the address and give the password
    (which opens the account and signs in); the response to that last step."""
    page = client.post("/register", data={**data, "csrf_token": csrf_token(client, "/register")})
    assert page.status_code == 200 and "Check your inbox" in page.get_data(as_text=True), \
        page.get_data(as_text=True)
    sent = registration_mail(db)
    assert len(sent) == 1 and sent[0].kind == "account.confirm_email", sent
    link = re.search(r"https?://[^/\s]+(/register/confirm/\S+)", sent[0].body)
    assert link, sent[0].body
    opened = client.get(link.group(1))
    assert opened.status_code == 302 and opened.headers["Location"] == "/register/confirm"
    return client.post("/register/confirm", data={
        "csrf_token": csrf_token(client, "/register/confirm"), "password": data["password"]})
