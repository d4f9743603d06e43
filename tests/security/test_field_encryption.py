"""Columns encrypted at rest (the seeds of authenticator apps): what is stored, the keys, and
their rotation."""

from __future__ import annotations

import pyotp
import pytest
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import select, text

from config import Config, ConfigError
from pharmacy import create_app
from pharmacy.models import Role, User
from pharmacy.models import encrypted as enc
from tests.factories import UserFactory

PRODUCTION = {"DISPENSARY_ENV": "production", "SECRET_KEY": "s" * 40,
              "DATABASE_URL": "postgres://u@db/pharmacy", "REDIS_URL": "redis://r",
              "NOTIFY_BACKEND": "smtp", "SMTP_HOST": "mail.example.org",
              "PUBLIC_BASE_URL": "https://pharmacy.example.org"}


def _stored(db, user_id: int) -> str:  # type: ignore[no-untyped-def]
    return db.session.execute(text("select totp_secret from users where id = :id"),
                              {"id": user_id}).scalar_one()


def _with_keys(app: Flask, keys: str) -> Flask:
    config: Config = app.config["DISPENSARY_CONFIG"]
    return create_app(config.with_overrides(FIELD_ENCRYPTION_KEYS=keys))


def _secret_seen_by(other: Flask, user_id: int) -> str | None:
    from pharmacy.extensions import db

    with other.app_context():
        try:
            return db.session.scalar(select(User.totp_secret).where(User.id == user_id))
        finally:
            db.session.remove()
            db.engine.dispose()


def test_the_seed_is_stored_encrypted_and_read_back_plain(db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PHARMACIST)
    seed = pyotp.random_base32()
    user.totp_secret = seed
    db.session.commit()
    stored = _stored(db, user.id)
    assert stored.startswith(enc.PREFIX) and seed not in stored
    db.session.expire_all()
    assert db.session.get(User, user.id).totp_secret == seed
    # Fernet is randomised: the same seed written twice is stored differently.
    assert enc.encrypt(seed) != enc.encrypt(seed)


def test_keys_rotate_without_losing_a_seed(app, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PHARMACIST)
    user.totp_secret = seed = pyotp.random_base32()
    db.session.commit()
    before = _stored(db, user.id)
    old = enc.derived_key(app.config["SECRET_KEY"])  # the test app's key (none configured)
    new = Fernet.generate_key().decode()
    # A key the value was not written with opens nothing, and says so.
    with pytest.raises(enc.FieldKeyError, match="no configured key opens"):
        _secret_seen_by(_with_keys(app, new), user.id)
    # The new key first, the old one still there: rotate, then the old one can go.
    both = _with_keys(app, f"{new},{old}")
    with both.app_context():  # the command runs in the app in context (the test holds one)
        result = both.test_cli_runner().invoke(args=["rotate-field-keys"])
        from pharmacy.extensions import db as both_db

        both_db.engine.dispose()
    assert result.exit_code == 0, result.output
    assert "1 values re-encrypted" in result.output
    assert _stored(db, user.id) != before
    assert _secret_seen_by(_with_keys(app, new), user.id) == seed
    with pytest.raises(enc.FieldKeyError):
        _secret_seen_by(_with_keys(app, old), user.id)


def test_a_seed_no_key_opens_breaks_only_its_code_check_not_the_account_or_its_reset(
        app, db) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from pharmacy.services import totp

    user = UserFactory(role=Role.PHARMACIST)
    user.totp_enabled_at = datetime.now(UTC)
    db.session.commit()
    for raw, message in (("JBSWY3DPEHPK3PXP", "not encrypted"),
                         ("f1:" + Fernet(Fernet.generate_key()).encrypt(b"x").decode(),
                          "no configured key opens")):
        db.session.execute(text("update users set totp_secret = :raw where id = :id"),
                           {"raw": raw, "id": user.id})
        db.session.commit()
        db.session.expire_all()
        loaded = db.session.get(User, user.id)  # every request loads its user: still fine
        assert totp.is_enrolled(loaded)
        with pytest.raises(enc.FieldKeyError, match=message):
            _ = loaded.totp_secret
        db.session.rollback()
    # The administrator's way out still works without reading the seed.
    done = app.test_cli_runner().invoke(args=[
        "reset-two-factor", user.email, "--reason", "key lost", "--operator", "A. Admin"])
    assert done.exit_code == 0, done.output
    assert _stored(db, user.id) is None


def test_production_needs_its_own_keys_and_well_formed_ones() -> None:
    with pytest.raises(ConfigError, match="FIELD_ENCRYPTION_KEYS"):
        Config.from_env(PRODUCTION)
    key = Fernet.generate_key().decode()
    assert Config.from_env({**PRODUCTION, "FIELD_ENCRYPTION_KEYS": key}).is_production
    with pytest.raises(ConfigError, match="key 2 is not a Fernet key") as refused:
        Config.from_env({**PRODUCTION, "FIELD_ENCRYPTION_KEYS": f"{key}, not-a-key-at-all"})
    assert "not-a-key-at-all" not in str(refused.value)  # a key's value is never echoed
    # Development derives one from SECRET_KEY; a malformed key is refused there too.
    with pytest.raises(ConfigError, match="key 1"):
        Config.from_env({"FIELD_ENCRYPTION_KEYS": "short"})
