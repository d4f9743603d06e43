"""The optional second factor (TOTP) of pharmacists and admins: enrolment, the two-step sign-in
on the pages and the API, replay, failures, session handling, turning it off."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select, text

from pharmacy.models import AuditEvent, Notification, RecoveryCode, Role, User
from pharmacy.services import totp as totp_service
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.helpers import csrf_token, web_login

PROBLEM = "application/problem+json"


def code(secret: str, offset: int = 0) -> str:
    """The code of the time step ``offset`` steps from now (the server accepts -1..+1).

    Near the end of a 30 s step it first waits for the next one: a code of step -1 made
    just before a step boundary is two steps old when a slow server checks it.
    """
    totp = pyotp.TOTP(secret)
    left = totp.interval - time.time() % totp.interval
    if left < 5:
        time.sleep(left + 0.05)
    return totp.generate_otp(totp.timecode(time.time()) + offset)


def _post(client, path: str, data: dict[str, str], page: str = "/account/two-factor"):  # type: ignore[no-untyped-def]
    return client.post(path, data={**data, "csrf_token": csrf_token(client, page)})


RECOVERY_CODE = re.compile(r"<li><code>([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})</code>")


def _enrol_with_codes(client, db, user: User) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    """Sign in, set up and confirm (with the code of the previous step); returns the secret
    and the recovery codes shown once on confirming."""
    assert web_login(client, user.email, DEFAULT_PASSWORD).status_code == 302
    assert _post(client, "/account/two-factor/setup", {}).status_code == 303
    page = client.get("/account/two-factor").get_data(as_text=True)
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page).group(1)  # type: ignore[union-attr]
    confirmed = _post(client, "/account/two-factor/confirm", {"code": code(secret, -1)})
    assert confirmed.status_code == 200
    assert confirmed.headers["Cache-Control"] == "no-store"
    codes = RECOVERY_CODE.findall(confirmed.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    db.session.expire_all()
    assert totp_service.is_enrolled(db.session.get(User, user.id))
    return secret, codes


def _enrol(client, db, user: User) -> str:  # type: ignore[no-untyped-def]
    return _enrol_with_codes(client, db, user)[0]


@pytest.fixture()
def pharmacist(db):  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    return user


def _actions(db) -> list[str]:  # type: ignore[no-untyped-def]
    return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_enrolment_shows_a_qr_code_and_the_secret_and_needs_a_valid_code(
        client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    assert "Set up two-step sign-in" in client.get("/account/two-factor").get_data(as_text=True)
    _post(client, "/account/two-factor/setup", {})
    response = client.get("/account/two-factor")
    assert response.headers["Cache-Control"] == "no-store"  # it shows the secret key
    page = response.get_data(as_text=True)
    assert "<svg" in page and "<path" in page  # the QR code, drawn on the server
    assert "<script" not in page.split("<main", 1)[1]
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page).group(1)  # type: ignore[union-attr]
    assert f"otpauth://totp/Dispensary:{pharmacist.email.replace('@', '%40')}" in page
    assert f"secret={secret}" in page
    # A wrong code does not turn it on.
    wrong = _post(client, "/account/two-factor/confirm", {"code": "000000"})
    assert wrong.status_code == 303
    db.session.expire_all()
    assert not totp_service.is_enrolled(db.session.get(User, pharmacist.id))
    assert "That code is not right" in client.get("/account/two-factor").get_data(as_text=True)
    _post(client, "/account/two-factor/confirm", {"code": code(secret)})
    db.session.expire_all()
    assert totp_service.is_enrolled(db.session.get(User, pharmacist.id))
    assert "user.totp_enabled" in _actions(db)
    # This session goes on; the page now offers to turn it off.
    assert "Turn off two-step sign-in" in client.get(
        "/account/two-factor").get_data(as_text=True)


def test_turning_it_on_ends_other_sessions_and_tokens(app, client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    token = client.post("/api/v1/auth/token", json={
        "email": pharmacist.email, "password": DEFAULT_PASSWORD}).get_json()["access_token"]
    other = app.test_client()
    web_login(other, pharmacist.email, DEFAULT_PASSWORD)
    assert other.get("/pharmacist/").status_code == 200
    _enrol(client, db, pharmacist)
    assert client.get("/pharmacist/").status_code == 200
    assert other.get("/pharmacist/").status_code == 302
    assert client.get("/api/v1/auth/me",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 401


@pytest.mark.parametrize("role", [Role.PATIENT, Role.COURIER])
def test_only_pharmacists_and_admins_may_enrol(client, db, role: Role) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=role)
    db.session.commit()
    web_login(client, user.email, DEFAULT_PASSWORD)
    assert client.get("/account/two-factor").status_code == 403
    with pytest.raises(Exception, match="pharmacists and admins"):
        totp_service.start_enrolment(db.session, user)


def test_sign_in_asks_for_the_code_and_is_not_signed_in_before_it(
        app, client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret = _enrol(client, db, pharmacist)
    fresh = app.test_client()
    with fresh.session_transaction() as sess:
        sess["planted"] = "by-an-attacker"  # anything set before sign-in must not survive
    first = web_login(fresh, pharmacist.email, DEFAULT_PASSWORD)
    assert first.status_code == 302 and first.headers["Location"].endswith("/login/code")
    with fresh.session_transaction() as sess:
        assert "uid" not in sess and "planted" not in sess
    assert fresh.get("/pharmacist/").status_code == 302  # not signed in yet
    page = fresh.get("/login/code")
    assert page.status_code == 200 and 'autocomplete="one-time-code"' in page.get_data(
        as_text=True)
    done = fresh.post("/login/code", data={"code": code(secret),
                                           "csrf_token": csrf_token(fresh, "/login/code")})
    assert done.status_code == 302
    with fresh.session_transaction() as sess:
        assert sess["uid"] == pharmacist.id and "pending_2fa" not in sess
    assert fresh.get("/pharmacist/").status_code == 200
    assert _actions(db)[-1] == "user.login"


def test_a_code_is_accepted_once(app, client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret = _enrol(client, db, pharmacist)
    used = code(secret)
    for attempt in range(2):
        other = app.test_client()
        web_login(other, pharmacist.email, DEFAULT_PASSWORD)
        response = other.post("/login/code", data={
            "code": used, "csrf_token": csrf_token(other, "/login/code")})
        if attempt == 0:
            assert response.status_code == 302
        else:
            assert response.status_code == 401  # the same code, replayed within its window
            assert "That code is not right" in response.get_data(as_text=True)
            assert other.get("/pharmacist/").status_code == 302


def test_wrong_codes_count_as_failed_sign_ins_and_lock_the_account(
        app, client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret = _enrol(client, db, pharmacist)
    other = app.test_client()
    web_login(other, pharmacist.email, DEFAULT_PASSWORD)
    token = csrf_token(other, "/login/code")
    for _ in range(4):
        assert other.post("/login/code", data={"code": "123456",
                                               "csrf_token": token}).status_code == 401
    locked = other.post("/login/code", data={"code": "123456", "csrf_token": token})
    assert locked.status_code == 429
    assert "locked" in locked.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(User, pharmacist.id).locked_until is not None
    failed = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "user.login_failed")).all()
    assert [e.after["factor"] for e in failed] == ["totp"] * 5
    # Locked: even the right password and code are refused now.
    again = app.test_client()
    assert web_login(again, pharmacist.email, DEFAULT_PASSWORD).status_code in (429,)
    assert again.get("/pharmacist/").status_code == 302
    del secret


def test_a_waiting_sign_in_expires(app, client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret = _enrol(client, db, pharmacist)
    other = app.test_client()
    web_login(other, pharmacist.email, DEFAULT_PASSWORD)
    token = csrf_token(other, "/login/code")
    with other.session_transaction() as sess:
        sess["pending_2fa"] = {**sess["pending_2fa"], "at": int(time.time()) - 301}
    response = other.post("/login/code", data={"code": code(secret), "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert other.get("/pharmacist/").status_code == 302


def test_the_code_step_without_a_password_step_sends_you_to_sign_in(client, db) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/login/code")
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")


def test_the_api_token_needs_the_code_for_enrolled_accounts(client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret = _enrol(client, db, pharmacist)
    creds = {"email": pharmacist.email, "password": DEFAULT_PASSWORD}
    missing = client.post("/api/v1/auth/token", json=creds)
    assert missing.status_code == 401 and missing.mimetype == PROBLEM
    assert missing.get_json()["code"] == "totp_required"
    db.session.expire_all()
    assert db.session.get(User, pharmacist.id).failed_login_count == 0  # not a failure
    wrong = client.post("/api/v1/auth/token", json={**creds, "totp": "000000"})
    assert wrong.status_code == 401 and wrong.get_json()["code"] == "totp_invalid"
    db.session.expire_all()
    assert db.session.get(User, pharmacist.id).failed_login_count == 1
    good = code(secret)
    ok = client.post("/api/v1/auth/token", json={**creds, "totp": good})
    assert ok.status_code == 200 and ok.get_json()["access_token"]
    replay = client.post("/api/v1/auth/token", json={**creds, "totp": good})
    assert replay.status_code == 401 and replay.get_json()["code"] == "totp_invalid"
    # A wrong password with a right code is still just a wrong password.
    bad_password = client.post("/api/v1/auth/token", json={
        **creds, "password": "nope", "totp": code(secret, 1)})
    assert bad_password.get_json()["code"] == "unauthorised"


def test_accounts_without_a_second_factor_ignore_the_field(client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/auth/token", json={
        "email": pharmacist.email, "password": DEFAULT_PASSWORD, "totp": "123456"})
    assert response.status_code == 200


def test_turning_it_off_needs_a_current_code(app, client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret = _enrol(client, db, pharmacist)
    _post(client, "/account/two-factor/disable", {"code": "000000"})
    db.session.expire_all()
    assert totp_service.is_enrolled(db.session.get(User, pharmacist.id))
    assert _post(client, "/account/two-factor/disable",
                 {"code": code(secret, 1)}).status_code == 303
    db.session.expire_all()
    user = db.session.get(User, pharmacist.id)
    assert not totp_service.is_enrolled(user) and user.totp_secret is None
    actions = _actions(db)
    assert "user.totp_disabled" in actions and "user.login_failed" in actions
    assert client.post("/api/v1/auth/token", json={
        "email": pharmacist.email, "password": DEFAULT_PASSWORD}).status_code == 200


def test_codes_are_checked_against_their_time_step(db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    user = db.session.get(User, pharmacist.id)
    user.totp_secret = pyotp.random_base32()
    user.totp_enabled_at = datetime.now(UTC)
    db.session.commit()
    otp = pyotp.TOTP(user.totp_secret)
    now = datetime(2026, 11, 26, 10, 0, 5, tzinfo=UTC)
    step = otp.timecode(now)
    assert not totp_service.accept_code(db.session, user, otp.generate_otp(step - 2), now=now)
    assert not totp_service.accept_code(db.session, user, otp.generate_otp(step + 2), now=now)
    assert not totp_service.accept_code(db.session, user, "12345", now=now)
    assert not totp_service.accept_code(db.session, user, "abcdef", now=now)
    assert totp_service.accept_code(db.session, user, otp.generate_otp(step), now=now)
    # Spaces as apps show them are fine; an earlier step after a later one is not.
    later = now + timedelta(seconds=30)
    spaced = otp.generate_otp(step + 1)
    assert totp_service.accept_code(db.session, user, f"{spaced[:3]} {spaced[3:]}", now=later)
    assert not totp_service.accept_code(db.session, user, otp.generate_otp(step), now=later)
    assert not totp_service.accept_code(db.session, user, spaced, now=later)


def test_an_administrator_resets_a_lost_second_factor_from_the_command_line(  # type: ignore[no-untyped-def]
        app, client, db, pharmacist) -> None:
    _enrol(client, db, pharmacist)
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["reset-two-factor", pharmacist.email, "--reason", " ",
                                  "--operator", "A. Admin"])
    assert refused.exit_code != 0 and "Say who is resetting" in refused.output
    assert runner.invoke(args=["reset-two-factor", "nobody@example.org", "--reason", "x",
                               "--operator", "A. Admin"]).exit_code != 0
    done = runner.invoke(args=["reset-two-factor", pharmacist.email.upper(), "--reason",
                               "phone lost; identity checked in person", "--operator",
                               "A. Admin"])
    assert done.exit_code == 0, done.output
    assert "must set it up again" in done.output
    db.session.expire_all()
    user = db.session.get(User, pharmacist.id)
    assert user.totp_secret is None and user.totp_enabled_at is None
    # The old session is over, and the password alone signs in again.
    assert client.get("/pharmacist/").status_code in (302, 401)
    assert web_login(client, pharmacist.email, DEFAULT_PASSWORD).status_code == 302
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "user.totp_reset"))
    assert event.reason == "phone lost; identity checked in person"
    assert event.after == {"operator": "A. Admin"}
    again = runner.invoke(args=["reset-two-factor", pharmacist.email, "--reason", "x",
                                "--operator", "A. Admin"])
    assert "nothing changed" in again.output


def test_a_remembered_browser_completes_both_steps_through_a_strangers_lock(  # type: ignore[no-untyped-def]
        app, client, db, pharmacist) -> None:
    secret = _enrol(client, db, pharmacist)  # this browser signed in: it is remembered
    client.post("/logout", data={"csrf_token": csrf_token(client, "/account/two-factor")})
    stranger = app.test_client()
    stranger.environ_base["REMOTE_ADDR"] = "203.0.113.50"
    for _ in range(5):
        web_login(stranger, pharmacist.email, "guess")
    db.session.expire_all()
    assert db.session.get(User, pharmacist.id).locked_until is not None
    assert web_login(client, pharmacist.email, DEFAULT_PASSWORD).headers["Location"] \
        .endswith("/login/code")
    done = client.post("/login/code", data={"csrf_token": csrf_token(client, "/login/code"),
                                            "code": code(secret, 1)})
    assert done.status_code == 302 and "/login" not in done.headers["Location"]


def test_changing_a_password_with_two_step_on_needs_a_code(client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret = _enrol(client, db, pharmacist)
    new = "a-much-longer-password-9"

    def change(code_value: str):  # type: ignore[no-untyped-def]
        return client.post("/password", data={
            "csrf_token": csrf_token(client, "/password"), "current": DEFAULT_PASSWORD,
            "new": new, "confirm": new, "code": code_value})

    refused = change("000000")
    assert refused.status_code == 422 and "authenticator app is not right" in \
        refused.get_data(as_text=True)
    assert change(code(secret, 1)).status_code == 302
    assert "user.login_failed" in _actions(db)


def _second_step(app, user: User, value: str):  # type: ignore[no-untyped-def]
    """A fresh browser: the password, then ``value`` as the code."""
    other = app.test_client()
    assert web_login(other, user.email, DEFAULT_PASSWORD).headers["Location"] \
        .endswith("/login/code")
    response = other.post("/login/code", data={"code": value,
                                                "csrf_token": csrf_token(other, "/login/code")})
    return other, response


def test_recovery_codes_are_kept_only_as_hashes_and_the_seed_encrypted(
        client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret, codes = _enrol_with_codes(client, db, pharmacist)
    stored = db.session.execute(text("select totp_secret from users where id = :id"),
                                {"id": pharmacist.id}).scalar_one()
    assert stored.startswith("f1:") and secret not in stored
    hashes = db.session.scalars(select(RecoveryCode.code_hash).where(
        RecoveryCode.user_id == pharmacist.id)).all()
    assert len(hashes) == 10
    assert hashes[0] not in codes and codes[0].replace("-", "") not in hashes
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "10 of 10" in page and codes[0] not in page  # shown once, never again


def test_a_recovery_code_signs_in_once_and_tells_the_owner(app, client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    _, codes = _enrol_with_codes(client, db, pharmacist)
    # Typed as people copy it: capitals, spaces instead of hyphens.
    typed = codes[3].upper().replace("-", " ")
    browser, response = _second_step(app, pharmacist, typed)
    assert response.status_code == 302 and "/login" not in response.headers["Location"]
    assert browser.get("/pharmacist/").status_code == 200
    assert "user.recovery_code_used" in _actions(db)
    told = db.session.scalar(select(Notification).where(
        Notification.user_id == pharmacist.id,
        Notification.kind == "account.recovery_code_used"))
    assert told is not None and "9 of them are left" in told.body
    assert "9 of 10" in browser.get("/account/two-factor").get_data(as_text=True)
    # Spent: the same code again is a wrong code, counted as a failed sign-in.
    again, refused = _second_step(app, pharmacist, codes[3])
    assert refused.status_code == 401 and again.get("/pharmacist/").status_code == 302
    db.session.expire_all()
    assert db.session.get(User, pharmacist.id).failed_login_count == 1
    # Something shaped like a recovery code that is not one is refused too.
    assert _second_step(app, pharmacist, "abcd-efgh-jkmn-pqrs")[1].status_code == 401


def test_the_api_takes_a_recovery_code_in_the_totp_field(client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    _, codes = _enrol_with_codes(client, db, pharmacist)
    creds = {"email": pharmacist.email, "password": DEFAULT_PASSWORD}
    ok = client.post("/api/v1/auth/token", json={**creds, "totp": codes[0]})
    assert ok.status_code == 200 and ok.get_json()["access_token"]
    replay = client.post("/api/v1/auth/token", json={**creds, "totp": codes[0]})
    assert replay.status_code == 401 and replay.get_json()["code"] == "totp_invalid"


def test_new_recovery_codes_replace_the_old_ones(app, client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret, old = _enrol_with_codes(client, db, pharmacist)

    def hashes() -> set[str]:
        db.session.expire_all()
        return set(db.session.scalars(select(RecoveryCode.code_hash).where(
            RecoveryCode.user_id == pharmacist.id)))

    before = hashes()
    wrong = _post(client, "/account/two-factor/recovery-codes", {"code": "000000"})
    assert wrong.status_code == 303 and hashes() == before
    assert "user.login_failed" in _actions(db)
    made = _post(client, "/account/two-factor/recovery-codes", {"code": code(secret, 1)})
    assert made.status_code == 200 and made.headers["Cache-Control"] == "no-store"
    new = RECOVERY_CODE.findall(made.get_data(as_text=True))
    assert len(new) == 10 and not set(new) & set(old)
    assert _second_step(app, pharmacist, old[0])[1].status_code == 401
    assert _second_step(app, pharmacist, new[0])[1].status_code == 302


def test_a_recovery_code_turns_two_step_sign_in_off_and_the_codes_go_with_it(
        client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    _, codes = _enrol_with_codes(client, db, pharmacist)
    assert _post(client, "/account/two-factor/disable", {"code": codes[9]}).status_code == 303
    db.session.expire_all()
    assert not totp_service.is_enrolled(db.session.get(User, pharmacist.id))
    assert db.session.scalar(select(RecoveryCode.id).where(
        RecoveryCode.user_id == pharmacist.id)) is None


def test_enrolment_is_confirmed_only_by_the_new_apps_code(db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    user = db.session.get(User, pharmacist.id)
    totp_service.start_enrolment(db.session, user)
    with pytest.raises(Exception, match="not right"):
        totp_service.confirm_enrolment(db.session, user, "abcd-efgh-jkmn-pqrs")
    with pytest.raises(Exception, match="not on"):
        totp_service.new_recovery_codes(db.session, user)


def test_an_administrators_reset_voids_the_recovery_codes(app, client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    _, codes = _enrol_with_codes(client, db, pharmacist)
    _second_step(app, pharmacist, codes[0])
    admin = UserFactory(role=Role.ADMIN)
    db.session.commit()
    office = app.test_client()
    web_login(office, admin.email, DEFAULT_PASSWORD)
    assert "9 recovery codes left" in office.get(f"/admin/users/{pharmacist.id}").get_data(
        as_text=True)
    done = app.test_cli_runner().invoke(args=[
        "reset-two-factor", pharmacist.email, "--reason", "phone lost", "--operator", "A"])
    assert done.exit_code == 0, done.output
    assert db.session.scalar(select(RecoveryCode.id).where(
        RecoveryCode.user_id == pharmacist.id)) is None


def _mails(db, user: User) -> list[str]:  # type: ignore[no-untyped-def]
    db.session.expire_all()
    return list(db.session.scalars(select(Notification.kind).where(
        Notification.user_id == user.id).order_by(Notification.id)))


def test_the_owner_is_told_of_every_change_to_the_second_factor_once(
        client, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    secret, codes = _enrol_with_codes(client, db, pharmacist)
    assert _mails(db, pharmacist) == []  # turning it on, with its first codes: no mail
    # A recovery code confirming a change is not reported apart from the change.
    made = _post(client, "/account/two-factor/recovery-codes", {"code": codes[0]})
    assert made.status_code == 200
    new = RECOVERY_CODE.findall(made.get_data(as_text=True))
    assert _mails(db, pharmacist) == ["account.recovery_codes_made"]
    assert _post(client, "/account/two-factor/disable", {"code": new[1]}).status_code == 303
    assert _mails(db, pharmacist) == ["account.recovery_codes_made", "account.totp_disabled"]
    body = db.session.scalar(select(Notification.body).where(
        Notification.kind == "account.totp_disabled"))
    assert "tell an administrator" in body and new[1] not in body
    del secret


def test_recovery_codes_are_read_as_people_paste_them(db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    user = db.session.get(User, pharmacist.id)
    totp_service.start_enrolment(db.session, user)
    now = datetime.now(UTC)
    totp_service.confirm_enrolment(db.session, user, pyotp.TOTP(user.totp_secret).now(), now=now)
    codes = totp_service.new_recovery_codes(db.session, user, tell=False)
    pasted = "\u00a0" + codes[0].upper().replace("-", "\u2013") + "\n"  # no-break space, en dash
    assert totp_service.accept_code(db.session, user, pasted, now=now)
    assert not totp_service.accept_code(db.session, user, codes[0], now=now)
    # Where only the app's code will do (confirming a new app), a recovery code is refused.
    assert not totp_service.accept_code(db.session, user, codes[1], now=now, recovery=False)


def test_two_requests_racing_with_one_recovery_code_let_one_in(app, db, pharmacist) -> None:  # type: ignore[no-untyped-def]
    import threading

    from pharmacy.extensions import db as handle

    user = db.session.get(User, pharmacist.id)
    totp_service.start_enrolment(db.session, user)
    now = datetime.now(UTC)
    totp_service.confirm_enrolment(db.session, user, pyotp.TOTP(user.totp_secret).now(), now=now)
    code_value = totp_service.new_recovery_codes(db.session, user, tell=False)[0]
    db.session.commit()
    start, results = threading.Barrier(4), []

    def spend() -> None:
        with app.app_context():
            racer = handle.session.get(User, pharmacist.id)
            start.wait()
            results.append(totp_service.accept_code(handle.session, racer, code_value, now=now))
            handle.session.commit()
            handle.session.remove()

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, False, False, True]
