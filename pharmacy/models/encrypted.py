"""Columns encrypted at rest (Fernet: AES-128-CBC with HMAC-SHA256, from `cryptography`).

A copy of the database (a backup, a replica, a leaked dump) does not give away what these
columns hold: the key lives in the environment (`FIELD_ENCRYPTION_KEYS`), not in the
database. Used for secrets that would let someone act as a user, such as the seed of a
staff member's authenticator app.

Keys: a comma-separated list of Fernet keys; the first encrypts, every one decrypts, so a
key is rotated without a value any instance cannot open: add the new key last everywhere,
then put it first everywhere, then re-write the values (`flask rotate-field-keys`) and drop
the old one (README). Without keys (development, tests) one is
derived from `SECRET_KEY`; production refuses to start without its own.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Flask, current_app, has_app_context
from sqlalchemy import Connection, String, column, select, table, update
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: Marks a stored value as encrypted by this module (version 1: Fernet).
PREFIX = "f1:"


class FieldKeyError(RuntimeError):
    """No key is configured, a configured key is malformed, or none of them opens a value."""


def key_ring(raw: str, secret_key: str) -> list[str]:
    """The keys of a `FIELD_ENCRYPTION_KEYS` value (checked by `Config.from_env`), or the one
    derived from SECRET_KEY when it is empty."""
    from config import split_keys

    return split_keys(raw) or [derived_key(secret_key)]


def derived_key(secret_key: str) -> str:
    """A Fernet key derived from the app's SECRET_KEY (HKDF-SHA256), for development and
    tests only."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"dispensary field encryption v1").derive(secret_key.encode())
    return base64.urlsafe_b64encode(raw).decode()


def configure(app: Flask, keys: Sequence[str]) -> None:
    """Install the app's key ring (the first key encrypts). Called by `create_app`.

    Values are encrypted and decrypted with the ring of the app in context (one process may
    build several apps, as the tests do); outside an app context they cannot be."""
    if not keys:
        raise FieldKeyError("no field encryption key")
    app.extensions["field_encryption"] = MultiFernet([Fernet(k) for k in keys])


def _keys() -> MultiFernet:
    if not has_app_context() or "field_encryption" not in current_app.extensions:
        raise FieldKeyError("encrypted columns are read and written inside an app context "
                            "(create_app installs the keys)")
    ring: MultiFernet = current_app.extensions["field_encryption"]
    return ring


def encrypt(value: str) -> str:
    return PREFIX + _keys().encrypt(value.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        raise FieldKeyError("a value in an encrypted column is not encrypted")
    try:
        return _keys().decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise FieldKeyError("no configured key opens a stored value (was a key dropped "
                            "before the values were rotated?)") from None


def rotate(stored: str) -> str:
    """The value re-encrypted under the first key."""
    return encrypt(decrypt(stored))


#: Every encrypted column, as (table, primary key, column).
COLUMNS = (("users", "id", "totp_secret"),)


def rotate_all(connection: Connection) -> int:
    """Re-encrypt every stored value under the first key (rows locked as they are read);
    returns how many. Run once every app instance has the new key list, before the old key
    is dropped from it."""
    done = 0
    for table_name, key, name in COLUMNS:
        raw = table(table_name, column(key), column(name))  # untyped: the stored text
        rows = connection.execute(select(raw.c[key], raw.c[name]).where(raw.c[name].is_not(None))
                                  .with_for_update()).all()
        for pk, stored in rows:
            connection.execute(update(raw).where(raw.c[key] == pk)
                               .values({name: rotate(stored)}))
            done += 1
    return done


class EncryptedString(TypeDecorator[str]):
    """A string kept encrypted in the database and plain in Python.

    The stored text is longer than the value (about 1.4 × + 60 characters), so the column
    is sized for the ciphertext. Encrypted values cannot be compared or searched in SQL.
    """

    impl = String
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else decrypt(value)
