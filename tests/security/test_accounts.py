"""Staff accounts over their life (create, password, deactivate) from the command line, a
user's own password change, and no demo accounts in production; on PostgreSQL and Redis."""

from __future__ import annotations

from sqlalchemy import select

from pharmacy.models import AuditEvent, Courier, Role, User
from tests.factories import DEFAULT_PASSWORD, PharmacyFactory, UserFactory
from tests.pharmacy.helpers import api_token, csrf_token, web_login

NEW = "a-long-new-password-1"


def _audit(db, action: str) -> AuditEvent | None:  # type: ignore[no-untyped-def]
    return db.session.scalar(select(AuditEvent).where(AuditEvent.action == action)
                             .order_by(AuditEvent.id.desc()).limit(1))


def test_create_user_makes_staff_who_can_sign_in(runner, db, client) -> None:  # type: ignore[no-untyped-def]
    made = runner.invoke(args=["create-user", "Pat.Smith@Example.org", "--role", "pharmacist",
                               "--name", "Pat Smith", "--operator", "Ops Lead",
                               "--password-stdin"], input=NEW + "\n")
    assert made.exit_code == 0, made.output
    user = db.session.scalar(select(User).where(User.email == "pat.smith@example.org"))
    assert user.role is Role.PHARMACIST and user.full_name == "Pat Smith"
    assert _audit(db, "user.staff_created").after == {"role": "pharmacist",
                                                      "operator": "Ops Lead"}
    assert web_login(client, "pat.smith@example.org", NEW).status_code == 302

    for args, stdin, message in (
            (["again@example.org", "--role", "admin"], "short\n", "at least 12"),
            (["pat.smith@example.org", "--role", "admin"], NEW + "\n", "already an account"),
            (["not-an-address", "--role", "admin"], NEW + "\n", "valid e-mail"),
            (["c@example.org", "--role", "courier"], NEW + "\n", "ODS code"),
            (["c@example.org", "--role", "courier", "--pharmacy", "NOPE", "--shift",
              "09:00-17:00"], NEW + "\n", "ODS code"),
            (["c@example.org", "--role", "admin", "--shift", "nine-five"], NEW + "\n",
             "HH:MM-HH:MM")):
        refused = runner.invoke(args=["create-user", *args, "--name", "X", "--operator", "Ops",
                                      "--password-stdin"], input=stdin)
        assert refused.exit_code != 0 and message in refused.output, (args, refused.output)

    pharmacy = PharmacyFactory()
    db.session.commit()
    courier = runner.invoke(args=["create-user", "van@example.org", "--role", "courier",
                                  "--name", "Van Driver", "--operator", "Ops", "--pharmacy",
                                  pharmacy.ods_code, "--shift", "08:00-16:00",
                                  "--password-stdin"], input=NEW + "\n")
    assert courier.exit_code == 0, courier.output
    profile = db.session.scalar(select(Courier).join(User).where(User.email == "van@example.org"))
    assert profile.pharmacy_id == pharmacy.id and str(profile.shift_start) == "08:00:00"


def test_set_password_ends_sessions_and_tokens_and_lifts_a_lockout(  # type: ignore[no-untyped-def]
        app, runner, db, client) -> None:
    user = UserFactory(role=Role.ADMIN)
    db.session.commit()
    token = api_token(client, user.email, DEFAULT_PASSWORD)
    web_login(client, user.email, DEFAULT_PASSWORD)
    assert client.get("/admin/").status_code == 200
    user.failed_login_count = 5
    db.session.commit()

    done = runner.invoke(args=["set-password", user.email, "--operator", "Ops",
                               "--password-stdin"], input=NEW + "\n")
    assert done.exit_code == 0, done.output
    assert client.get("/admin/").status_code == 302  # this session has ended
    assert app.test_client().get("/api/v1/medicines", headers={
        "Authorization": f"Bearer {token}"}).status_code == 401  # and the token
    db.session.expire_all()
    assert db.session.get(User, user.id).failed_login_count == 0
    assert web_login(client, user.email, NEW).status_code == 302
    missing = runner.invoke(args=["set-password", "nobody@example.org", "--operator", "Ops",
                                  "--password-stdin"], input=NEW + "\n")
    assert missing.exit_code != 0 and "No account" in missing.output


def test_a_deactivated_account_is_out_at_once_and_can_come_back(  # type: ignore[no-untyped-def]
        app, runner, db, client) -> None:
    user = UserFactory(role=Role.PATIENT)
    db.session.commit()
    token = api_token(client, user.email, DEFAULT_PASSWORD)
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/medicines", headers=bearer).status_code == 200  # cached now
    off = runner.invoke(args=["deactivate-user", user.email, "--reason", "left the area",
                              "--operator", "Ops"])
    assert off.exit_code == 0 and "deactivated" in off.output
    assert client.get("/api/v1/medicines", headers=bearer).status_code == 401
    assert web_login(app.test_client(), user.email, DEFAULT_PASSWORD).status_code != 302
    assert _audit(db, "user.deactivated").reason == "left the area"
    again = runner.invoke(args=["deactivate-user", user.email, "--reason", "x",
                                "--operator", "Ops"])
    assert "already deactivated" in again.output
    back = runner.invoke(args=["deactivate-user", user.email, "--reason", "came back",
                               "--operator", "Ops", "--reactivate"])
    assert back.exit_code == 0 and "now active" in back.output
    assert web_login(app.test_client(), user.email, DEFAULT_PASSWORD).status_code == 302


def test_seed_demo_is_refused_in_production(app, runner, db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "ENV", "production")
    refused = runner.invoke(args=["seed-demo"])
    assert refused.exit_code != 0 and "refused in production" in refused.output
    assert db.session.scalar(select(User).where(User.email == "admin@example.com")) is None


def test_a_user_changes_their_own_password_and_other_sessions_end(app, db, client) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.COURIER)
    db.session.commit()
    elsewhere = app.test_client()
    web_login(elsewhere, user.email, DEFAULT_PASSWORD)
    token = api_token(client, user.email, DEFAULT_PASSWORD)
    web_login(client, user.email, DEFAULT_PASSWORD)

    def change(current: str, new: str, confirm: str):  # type: ignore[no-untyped-def]
        return client.post("/password", data={"csrf_token": csrf_token(client, "/password"),
                                               "current": current, "new": new,
                                               "confirm": confirm})

    for args, message in (((NEW, NEW, NEW), "current password is not right"),
                          ((DEFAULT_PASSWORD, NEW, NEW + "x"), "do not match"),
                          ((DEFAULT_PASSWORD, "short", "short"), "at least 12")):
        refused = change(*args)
        assert refused.status_code == 422 and message in refused.get_data(as_text=True)
    assert change(DEFAULT_PASSWORD, NEW, NEW).status_code == 302
    assert client.get("/courier/").status_code == 200  # this session goes on
    assert elsewhere.get("/courier/").status_code == 302  # the other one has ended
    assert app.test_client().get("/api/v1/medicines", headers={
        "Authorization": f"Bearer {token}"}).status_code == 401
    assert _audit(db, "user.password_changed").actor_id == user.id
    assert web_login(app.test_client(), user.email, NEW).status_code == 302


def test_administrators_manage_accounts_on_their_pages(app, db, client) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from pharmacy.models.base import utcnow

    admin = UserFactory(role=Role.ADMIN, full_name="Ada Admin")
    pharmacist = UserFactory(role=Role.PHARMACIST)
    pharmacist.locked_until = utcnow() + timedelta(minutes=10)
    db.session.commit()
    web_login(client, admin.email, DEFAULT_PASSWORD)
    listed = client.get("/admin/users").get_data(as_text=True)
    assert pharmacist.email in listed and "locked" in listed
    token = csrf_token(client, "/admin/users")

    made = client.post("/admin/users", data={
        "csrf_token": token, "email": "new.pharmacist@example.org", "full_name": "New One",
        "role": "pharmacist", "password": NEW})
    assert made.status_code == 302
    assert web_login(app.test_client(), "new.pharmacist@example.org", NEW).status_code == 302
    assert _audit(db, "user.staff_created").actor_id == admin.id
    refused = client.post("/admin/users", data={
        "csrf_token": token, "email": "x@example.org", "full_name": "X", "role": "patient",
        "password": NEW})
    assert refused.status_code == 422 and "Choose pharmacist" in refused.get_data(as_text=True)
    odd = client.post("/admin/users", data={
        "csrf_token": token, "email": "c@example.org", "full_name": "C", "role": "courier",
        "password": NEW, "shift_start": "nine", "shift_end": "5pm"})
    assert odd.status_code == 422 and "two times" in odd.get_data(as_text=True)

    def change(user, what: str, reason: str = "checked by phone"):  # type: ignore[no-untyped-def]
        return client.post(f"/admin/users/{user.id}/{what}",
                           data={"csrf_token": token, "reason": reason})

    assert change(pharmacist, "unlock").status_code == 302
    db.session.expire_all()
    assert db.session.get(User, pharmacist.id).locked_until is None
    assert change(pharmacist, "deactivate", " ").status_code == 422  # a reason is needed
    assert change(pharmacist, "deactivate", "left the company").status_code == 302
    db.session.expire_all()
    assert db.session.get(User, pharmacist.id).is_active is False
    assert _audit(db, "user.deactivated").actor_id == admin.id
    own = change(admin, "deactivate", "testing")
    assert own.status_code == 409 and "your own account" in own.get_data(as_text=True)
    assert client.get("/admin/users/999999").status_code == 404
    assert change(pharmacist, "reactivate", "came back").status_code == 302
    assert "Nothing to change" in client.get(change(pharmacist, "reactivate").headers[
        "Location"]).get_data(as_text=True)


def test_guessing_the_current_password_locks_like_signing_in(app, db, client) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.COURIER)
    db.session.commit()
    web_login(client, user.email, DEFAULT_PASSWORD)
    answers = [client.post("/password", data={
        "csrf_token": csrf_token(client, "/password"), "current": f"guess-{n}",
        "new": NEW, "confirm": NEW}).status_code for n in range(6)]
    assert answers == [422] * 5 + [429]  # the fifth wrong one locks
    db.session.expire_all()
    assert db.session.get(User, user.id).locked_until is not None
    assert _audit(db, "user.login_failed") is not None


def test_a_new_password_voids_the_remembered_browser(app, db, client) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.COURIER)
    db.session.commit()
    web_login(client, user.email, DEFAULT_PASSWORD)  # remembered, for this password
    stale = client.get_cookie("device").value
    done = runner_set_password(app, user.email)
    assert done.exit_code == 0, done.output
    stranger = app.test_client()
    stranger.environ_base["REMOTE_ADDR"] = "203.0.113.60"
    for _ in range(5):
        web_login(stranger, user.email, "guess")
    browser = app.test_client()
    browser.set_cookie("device", stale)
    assert web_login(browser, user.email, NEW).status_code == 429  # the old note is void


def runner_set_password(app, email: str):  # type: ignore[no-untyped-def]
    return app.test_cli_runner().invoke(args=["set-password", email, "--operator", "Ops",
                                              "--password-stdin"], input=NEW + "\n")
