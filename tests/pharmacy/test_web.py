"""Pages: sign-in with CSRF, role landing pages, sign-out, cookie flags."""

from __future__ import annotations

import pytest

from pharmacy.models import Role
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.helpers import csrf_token, web_login

LANDINGS = {Role.PATIENT: "/patient/", Role.PHARMACIST: "/pharmacist/",
            Role.COURIER: "/courier/", Role.ADMIN: "/admin/"}


def test_login_page_is_served_with_a_csrf_token(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/login")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'name="csrf_token"' in html
    assert '<label for="email">' in html and '<label for="password">' in html


def test_a_post_without_csrf_token_is_refused(client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    response = client.post("/login", data={"email": user.email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert client.get("/patient/").status_code == 302  # still signed out


@pytest.mark.parametrize("role", list(LANDINGS))
def test_each_role_lands_on_its_own_page_and_not_on_others(client, db, role: Role) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=role)
    db.session.commit()
    response = web_login(client, user.email, DEFAULT_PASSWORD)
    assert response.status_code == 302
    assert client.get(response.headers["Location"]).status_code == 302  # "/" -> landing
    assert client.get("/").headers["Location"].endswith(LANDINGS[role])
    assert client.get(LANDINGS[role]).status_code == 200
    for other_role, path in LANDINGS.items():
        if other_role is not role:
            forbidden = client.get(path)
            assert forbidden.status_code == 403
            assert "not for your role" in forbidden.get_data(as_text=True)


def test_wrong_password_shows_a_message_and_keeps_you_out(client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    response = web_login(client, user.email, "wrong")
    assert response.status_code == 401
    assert "Wrong e-mail or password" in response.get_data(as_text=True)


def test_session_cookie_is_httponly_and_samesite(client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    response = web_login(client, user.email, DEFAULT_PASSWORD)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_logout_needs_post_with_csrf_and_ends_the_session(client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.ADMIN)
    db.session.commit()
    web_login(client, user.email, DEFAULT_PASSWORD)
    assert client.get("/logout").status_code == 405
    token = csrf_token(client, "/admin/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/").status_code == 302


def test_a_copy_of_a_signed_out_cookie_is_worth_nothing_and_sign_out_is_audited(  # type: ignore[no-untyped-def]
        app, client, db) -> None:
    from sqlalchemy import select

    from pharmacy.models import AuditEvent

    user = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    web_login(client, user.email, DEFAULT_PASSWORD)
    copied = client.get_cookie("session").value
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/pharmacist/").status_code == 200  # the copy works while signed in
    client.post("/logout", data={"csrf_token": csrf_token(client, "/pharmacist/")})
    assert thief.get("/pharmacist/").status_code == 302  # and not after sign-out
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "user.logout", AuditEvent.entity_id == str(user.id)))


@pytest.mark.parametrize(("role", "idle_s", "ends"), [
    (Role.PHARMACIST, 31 * 60, True), (Role.PHARMACIST, 29 * 60, False),
    (Role.COURIER, 31 * 60, False), (Role.COURIER, 13 * 3600, True)])
def test_idle_sessions_end_sooner_for_staff_on_shared_computers(  # type: ignore[no-untyped-def]
        client, db, monkeypatch, role, idle_s, ends) -> None:
    import time

    from pharmacy.web import session as web_session

    user = UserFactory(role=role)
    db.session.commit()
    web_login(client, user.email, DEFAULT_PASSWORD)
    home = {Role.PHARMACIST: "/pharmacist/", Role.COURIER: "/courier/"}[role]
    assert client.get(home).status_code == 200
    now = time.time()
    monkeypatch.setattr(web_session.time, "time", lambda: now + idle_s)
    assert (client.get(home).status_code == 302) is ends


def test_a_busy_session_still_ends_after_fourteen_hours(client, db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import time

    from pharmacy.web import session as web_session

    user = UserFactory(role=Role.COURIER)
    db.session.commit()
    web_login(client, user.email, DEFAULT_PASSWORD)
    start = time.time()
    for hour in range(0, 14):  # a request every hour keeps it from idling out
        monkeypatch.setattr(web_session.time, "time", lambda h=hour: start + h * 3600)
        assert client.get("/courier/").status_code == 200, hour
    monkeypatch.setattr(web_session.time, "time", lambda: start + 14 * 3600 + 60)
    assert client.get("/courier/").status_code == 302


def test_signed_out_visitors_are_sent_to_login_and_back(client, db) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/pharmacist/")
    assert response.status_code == 302
    assert "/login?next=/pharmacist/" in response.headers["Location"]
    user = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    token = csrf_token(client)
    after = client.post("/login?next=/pharmacist/", data={
        "email": user.email, "password": DEFAULT_PASSWORD, "csrf_token": token})
    assert after.headers["Location"] == "/pharmacist/"


def test_next_cannot_redirect_off_site(client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    token = csrf_token(client)
    after = client.post("/login?next=//evil.example/", data={
        "email": user.email, "password": DEFAULT_PASSWORD, "csrf_token": token})
    assert after.headers["Location"] == "/"


def test_page_errors_are_readable_html(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Not Found" in response.get_data(as_text=True)


def test_security_headers_forbid_inline_scripts_and_framing(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert "Strict-Transport-Security" not in response.headers  # development/test: no TLS
    assert "<script>" not in response.get_data(as_text=True)


def test_production_sends_hsts() -> None:
    from config import Config
    from pharmacy import create_app

    app = create_app(Config.from_env({
        "DISPENSARY_ENV": "production", "SECRET_KEY": "s" * 40,
        "DATABASE_URL": "sqlite:///:memory:", "REDIS_URL": "redis://127.0.0.1:1/0",
        "NOTIFY_BACKEND": "smtp", "SMTP_HOST": "mail.example.org",
        "PUBLIC_BASE_URL": "https://pharmacy.example",
        "FIELD_ENCRYPTION_KEYS": "7lW3cJkVd0J4vS1rXo0mBq8lZ0pG7yYb2YwF9cQe3aE="}))
    response = app.test_client().get("/healthz", base_url="https://pharmacy.example")
    assert "max-age=31536000" in response.headers["Strict-Transport-Security"]
