"""Sign-in and registration rate limits, on the suite's real Redis.

Acceptance (issue 8): "the rate limiter locks out the 6th wrong password within a minute".
The account lockout in the database also locks after 5 failures; these tests raise that
threshold so that what they show is the limiter's doing.
"""

from __future__ import annotations

import logging
import time

import pytest
from flask import Flask
from sqlalchemy import select

from config import config_for_tests
from pharmacy.models import AuditEvent
from pharmacy.rate_limits import storage_uri
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.helpers import web_login

PROBLEM = "application/problem+json"


@pytest.fixture()
def no_db_lockout(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app.config, "LOGIN_MAX_FAILURES", 1000)


def _token(client, email: str, password: str):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/auth/token", json={"email": email, "password": password})


def _assert_refused_by_limiter(response, *, window_s: int = 60) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == 429, response.get_data(as_text=True)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= window_s + 1  # whole seconds, rounded up
    body = response.get_json()
    assert response.mimetype == PROBLEM
    assert body["code"] == "too_many_attempts"
    assert body["retry_after"] == retry_after
    assert "try again in" in body["detail"]
    return body  # type: ignore[no-any-return]


def test_the_sixth_wrong_password_within_a_minute_is_refused(
        app: Flask, client, db, redis, no_db_lockout, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    assert app.config["RATELIMIT_SIGN_IN_FAILURES_PER_ACCOUNT"] == "5 per minute"  # the default
    user = UserFactory()
    db.session.commit()
    started = time.monotonic()
    for _ in range(5):
        assert _token(client, user.email, "wrong").status_code == 401
    # The sixth attempt, even with the right password, never reaches the password check.
    _assert_refused_by_limiter(_token(client, user.email, DEFAULT_PASSWORD))
    assert time.monotonic() - started < 60
    # Counted in the real Redis of the suite, under a key that holds no e-mail address.
    keys = [k.decode() for k in redis.keys("*")]
    assert any("sign-in-failures-account" in k for k in keys), keys
    assert not any(user.email in k for k in keys)
    # Audited once, naming the limit and not the address.
    events = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "auth.rate_limited")).all()
    assert len(events) == 1
    assert events[0].entity_id == "sign-in-failures-account"
    assert events[0].after["limit"] == "5 per 1 minute"
    assert user.email not in str(events[0].after)
    # No log line names the account or the client's address.
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert user.email not in logged and "127.0.0.1" not in logged
    # The account itself is not locked in the database: only the limiter said no.
    db.session.refresh(user)
    assert user.locked_until is None


def test_the_web_login_is_limited_per_account_across_web_and_api(
        client, db, redis, no_db_lockout) -> None:  # type: ignore[no-untyped-def]
    user, other = UserFactory(), UserFactory()
    db.session.commit()
    for _ in range(3):
        assert web_login(client, user.email, "wrong").status_code == 401
    for _ in range(2):
        assert _token(client, user.email, "wrong").status_code == 401
    page = web_login(client, user.email, DEFAULT_PASSWORD)
    assert page.status_code == 429
    assert 1 <= int(page.headers["Retry-After"]) <= 61
    text = page.get_data(as_text=True)
    assert "Too many sign-in attempts; try again in" in text and "<html" in text.lower()
    # Per account: another account from the same address still signs in.
    assert web_login(client, other.email, DEFAULT_PASSWORD).status_code == 302


def test_the_limit_is_a_moving_window_that_lets_the_account_back_in(
        app: Flask, client, db, redis, no_db_lockout, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "RATELIMIT_SIGN_IN_FAILURES_PER_ACCOUNT", "2 per 2 seconds")
    user = UserFactory()
    db.session.commit()
    for _ in range(2):
        assert _token(client, user.email, "wrong").status_code == 401
    _assert_refused_by_limiter(_token(client, user.email, DEFAULT_PASSWORD), window_s=2)
    time.sleep(2.2)
    assert _token(client, user.email, DEFAULT_PASSWORD).status_code == 200


def test_failures_are_limited_per_client_address_across_accounts(
        app: Flask, client, db, redis, no_db_lockout, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "RATELIMIT_SIGN_IN_FAILURES_PER_IP", "3 per minute")
    users = UserFactory.create_batch(4)
    db.session.commit()
    for user in users[:3]:
        assert _token(client, user.email, "wrong").status_code == 401
    body = _assert_refused_by_limiter(_token(client, users[3].email, DEFAULT_PASSWORD))
    assert "sign-in" in body["detail"]
    # The same client address counts from another one (X-Forwarded-For is not trusted).
    spoofed = client.post("/api/v1/auth/token", headers={"X-Forwarded-For": "10.9.8.7"},
                          json={"email": users[3].email, "password": DEFAULT_PASSWORD})
    assert spoofed.status_code == 429


def test_all_attempts_are_limited_per_client_address(
        app: Flask, client, db, redis, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "RATELIMIT_SIGN_IN_PER_IP", "3 per minute")
    user = UserFactory()
    db.session.commit()
    for _ in range(3):
        assert _token(client, user.email, DEFAULT_PASSWORD).status_code == 200
    _assert_refused_by_limiter(_token(client, user.email, DEFAULT_PASSWORD))


def test_successful_sign_ins_of_many_accounts_pass_the_default_limits(
        client, db, redis) -> None:  # type: ignore[no-untyped-def]
    # What `make bench-web` does from one address before loading the server.
    users = UserFactory.create_batch(33)
    db.session.commit()
    for user in users:
        assert _token(client, user.email, DEFAULT_PASSWORD).status_code == 200


def test_repeated_refusals_are_audited_once_per_window(
        client, db, redis, no_db_lockout) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    for _ in range(5):
        _token(client, user.email, "wrong")
    for _ in range(4):
        assert _token(client, user.email, "wrong").status_code == 429
    count = len(db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "auth.rate_limited")).all())
    assert count == 1


def test_registration_is_limited_per_client_address(
        app: Flask, client, db, redis, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.pharmacy.helpers import csrf_token

    monkeypatch.setitem(app.config, "RATELIMIT_REGISTER_PER_IP", "2 per hour")
    token = csrf_token(client, "/register")
    for _ in range(2):
        assert client.post("/register", data={"csrf_token": token}).status_code != 429
    refused = client.post("/register", data={"csrf_token": token})
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) <= 3601
    assert "Too many registrations" in refused.get_data(as_text=True)
    # Looking at the page is not limited.
    assert client.get("/register").status_code == 200


def test_with_redis_down_sign_in_still_answers(app: Flask, db, database_url: str) -> None:  # type: ignore[no-untyped-def]
    from pharmacy import create_app

    broken = create_app(config_for_tests(database_url, "redis://127.0.0.1:1/0"))
    user = UserFactory()
    db.session.commit()
    with broken.test_client() as c:
        assert _token(c, user.email, "wrong").status_code == 401
        assert _token(c, user.email, DEFAULT_PASSWORD).status_code == 200


def test_storage_follows_the_redis_url() -> None:
    assert storage_uri({"REDIS_URL": "redis://127.0.0.1:6379/3"}) == "redis://127.0.0.1:6379/3"
    assert storage_uri({"REDIS_URL": "unix:///srv/instance/redis.sock"}) == (
        "redis+unix:///srv/instance/redis.sock")
    assert storage_uri({"REDIS_URL": "redis://x", "RATELIMIT_STORAGE_URI": "memory://"}) == (
        "memory://")


def _from(app: Flask, address: str):  # type: ignore[no-untyped-def]
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_a_strangers_wrong_passwords_do_not_keep_the_owner_out(  # type: ignore[no-untyped-def]
        app: Flask, db, redis) -> None:
    from tests.pharmacy.helpers import csrf_token

    user = UserFactory()
    db.session.commit()
    owner = _from(app, "198.51.100.20")
    assert web_login(owner, user.email, DEFAULT_PASSWORD).status_code == 302  # device noted
    owner.post("/logout", data={"csrf_token": csrf_token(owner, "/login")})

    stranger = _from(app, "203.0.113.7")
    answers = [web_login(stranger, user.email, "guess").status_code for _ in range(6)]
    assert answers == [401, 401, 401, 401, 429, 429]
    db.session.refresh(user)
    assert user.locked_until is not None  # locked for whoever guesses...
    assert web_login(stranger, user.email, DEFAULT_PASSWORD).status_code == 429
    assert web_login(_from(app, "192.0.2.99"), user.email, DEFAULT_PASSWORD).status_code \
        == 429
    # ...but not for the owner on the browser they signed in from before, and the
    # stranger's failures did not use up the owner's own allowance either.
    assert web_login(owner, user.email, DEFAULT_PASSWORD).status_code == 302


def test_an_unknown_address_is_answered_like_a_real_account(app: Flask, db, redis) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    answers = {}
    for email, address in ((user.email, "203.0.113.8"), ("nobody@example.org", "203.0.113.9")):
        client = _from(app, address)
        answers[email] = [web_login(client, email, "guess").status_code for _ in range(6)]
        answers[email] += [_token(client, email, "guess").status_code]
    assert answers[user.email] == answers["nobody@example.org"]
    assert answers[user.email][:5] == [401, 401, 401, 401, 429]
