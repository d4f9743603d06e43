"""A forgotten password (PostgreSQL, Redis): the same answer whether or not an address has an
account; at most one e-mailed link per account per quarter hour; the link works once, for an
hour, and setting a password with it ends every session and lifts a lockout."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from pharmacy.errors import InvalidRequest
from pharmacy.models import AuditEvent, Notification, OutboxMessage, Role, User
from pharmacy.models.base import utcnow
from pharmacy.services import accounts
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.helpers import csrf_token, web_login

NEW = "a brand new passphrase"


def _ask(client, db, email: str, host: str = "localhost"):  # type: ignore[no-untyped-def]
    """Ask for a link, then run the job the page left in the outbox (no worker in tests)."""
    from pharmacy.jobs.outbox import run_message

    page = client.get("/password/forgot", base_url=f"http://{host}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert token, page
    page = client.post("/password/forgot", data={"csrf_token": token.group(1), "email": email},
                       base_url=f"http://{host}", follow_redirects=True)
    for message_id in db.session.scalars(select(OutboxMessage.id).where(
            OutboxMessage.key.like("password-reset:%"),
            OutboxMessage.completed_at.is_(None))).all():
        run_message(message_id)
    return page


def _link(db, user_id: int) -> str:  # type: ignore[no-untyped-def]
    body = db.session.scalars(select(Notification.body).where(
        Notification.user_id == user_id, Notification.kind == "account.password_reset")
        .order_by(Notification.id.desc())).first()
    match = re.search(r"https?://[^/\s]+(/password/reset/\S+)", body)
    assert match, body
    return match.group(1)


def test_a_forgotten_password_is_reset_once_with_the_emailed_link(app, client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PATIENT)
    db.session.commit()
    user_id, email = user.id, user.email
    web_login(client, email, DEFAULT_PASSWORD)  # a session that must end
    assert client.get("/patient/").status_code == 200
    user.locked_until = utcnow() + timedelta(minutes=15)  # then locked by failed sign-ins
    db.session.commit()

    known = _ask(client, db, email, host="evil.example").get_data(as_text=True)
    unknown = _ask(client, db, "nobody-" + email).get_data(as_text=True)
    said = "If an account uses that address"
    assert said in known and said in unknown  # the same answer either way
    assert db.session.scalar(select(func.count(Notification.id)).where(
        Notification.kind == "account.password_reset")) == 1
    _ask(client, db, email.upper())  # again within the quarter hour: no second e-mail
    assert db.session.scalar(select(func.count(Notification.id)).where(
        Notification.kind == "account.password_reset")) == 1

    assert db.session.scalars(select(OutboxMessage.args).where(
        OutboxMessage.key.like("password-reset:%"))).all() == [[]] * 3  # addresses forgotten
    sent = db.session.scalar(select(Notification).where(
        Notification.kind == "account.password_reset"))
    assert sent.sent_at is not None  # sent at once, ahead of the queue
    # Built on the configured address, whatever Host header the asker sent.
    assert f"{app.config['PUBLIC_BASE_URL']}/password/reset/" in sent.body
    assert "evil.example" not in sent.body

    link = _link(db, user_id)
    opened = client.get(link)  # the token moves into the session; the page has none
    assert opened.status_code == 302 and opened.headers["Location"] == "/password/reset"
    token = csrf_token(client, "/password/reset")
    short = client.post("/password/reset", data={"csrf_token": token, "new": "short",
                                                 "confirm": "short"})
    assert short.status_code == 422
    done = client.post("/password/reset", data={"csrf_token": token, "new": NEW,
                                                "confirm": NEW})
    assert done.status_code == 302 and done.headers["Location"].endswith("/login")
    db.session.expire_all()
    user = db.session.get(User, user_id)
    assert user.locked_until is None
    assert client.get("/patient/").status_code == 302  # the old session has ended
    assert web_login(client, email, DEFAULT_PASSWORD).status_code != 302  # old one is gone
    assert web_login(client, email, NEW).status_code == 302
    assert {"user.password_reset_requested", "user.password_reset"} <= set(db.session.scalars(
        select(AuditEvent.action).where(AuditEvent.entity_id == str(user_id))))

    again = client.get(link, follow_redirects=True).get_data(as_text=True)
    assert "expired or has already been used" in again  # the link is used up


def test_a_link_expires_after_an_hour_and_a_forged_one_never_works(app, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    secret = app.config["SECRET_KEY"]
    token = accounts.reset_token(user, secret_key=secret)
    assert accounts.user_for_reset_token(db.session, token, secret_key=secret).id == user.id
    with pytest.raises(InvalidRequest, match="expired"):
        accounts.user_for_reset_token(db.session, token, secret_key=secret,
                                      now=utcnow() + timedelta(hours=1, minutes=1))
    with pytest.raises(InvalidRequest, match="expired"):
        accounts.user_for_reset_token(db.session, token, secret_key="another key")
    with pytest.raises(InvalidRequest, match="expired"):
        accounts.user_for_reset_token(db.session, token[:-2] + "xx", secret_key=secret)
    user.is_active = False
    db.session.commit()
    with pytest.raises(InvalidRequest, match="expired"):  # a closed account
        accounts.user_for_reset_token(db.session, token, secret_key=secret)
    assert accounts.request_password_reset(db.session, user.email, secret_key=secret,
                                           base_url="https://x.example") is None
    assert db.session.scalar(select(func.count(Notification.id))) == 0
