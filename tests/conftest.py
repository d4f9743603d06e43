"""Fixtures built around ``create_app``: real PostgreSQL and real Redis.

TEST_DATABASE_URL (default: a ``dispensary_test_<pid>`` database on the local PostgreSQL, so
that several test runs on one machine do not trample each other) is dropped and re-created
once per run, migrated with ``flask db upgrade``, truncated after each test, and dropped at
the end. TEST_REDIS_URL (default: one of the local Redis's databases 1-15, chosen by pid) is
flushed around each test that uses it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from config import config_for_tests, normalise_database_url

DEFAULT_DB = (
    f"postgresql+psycopg://postgres:postgres@127.0.0.1:5432/dispensary_test_{os.getpid()}"
)
DEFAULT_REDIS = f"redis://127.0.0.1:6379/{1 + os.getpid() % 15}"


def _database_url() -> str:
    return normalise_database_url(os.environ.get("TEST_DATABASE_URL", DEFAULT_DB))


def drop_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    admin.dispose()


def recreate_database(url: str) -> None:
    """Drop and create the database named in ``url`` (PostgreSQL), via the admin database."""
    parsed = make_url(url)
    name = parsed.database
    assert name and re.fullmatch(r"[a-z0-9_]+", name), f"unsafe test database name {name!r}"
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url() -> str:
    return _database_url()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS)


@pytest.fixture(scope="session")
def app(database_url: str, redis_url: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    from flask_migrate import upgrade

    from pharmacy import create_app

    recreate_database(database_url)
    application = create_app(config_for_tests(database_url, redis_url).with_overrides(
        DELIVERY_PHOTO_DIR=str(tmp_path_factory.mktemp("delivery-photos"))))
    with application.app_context():
        upgrade()
    yield application
    with application.app_context():
        from pharmacy.extensions import db

        db.engine.dispose()
    if "TEST_DATABASE_URL" not in os.environ:
        drop_database(database_url)


@pytest.fixture()
def db(app: Flask) -> Iterator[object]:
    """The Flask-SQLAlchemy handle inside an app context; every table is emptied afterwards."""
    from pharmacy.extensions import db as _db
    from pharmacy.models import Base

    with app.app_context():
        yield _db
        _db.session.remove()
        names = [t.name for t in Base.metadata.sorted_tables]
        probe = " UNION ALL ".join(
            f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\")" for name in names)
        with _db.engine.begin() as conn:
            # TRUNCATE costs per table; most tests touch a handful, so empty only those.
            used = [row[0] for row in conn.execute(text(probe))]
            if used:
                tables = ", ".join(f'"{name}"' for name in used)
                conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        # Ids start again at 1: the next test's user 1 is not this one's.
        from pharmacy.caches import clear_caches
        from pharmacy.extensions import get_redis

        clear_caches(get_redis())


@pytest.fixture(autouse=True)
def _fresh_rate_limits(request: pytest.FixtureRequest) -> None:
    """Each test that builds on the app starts with no sign-in counted against 127.0.0.1.

    The suite signs in far more often than a person could; the limits themselves are tested
    in tests/security/test_rate_limits.py with the production defaults.
    """
    if "app" in request.fixturenames:
        from pharmacy.rate_limits import reset_rate_limits

        reset_rate_limits(request.getfixturevalue("app"))


@pytest.fixture()
def redis(app: Flask, redis_url: str) -> Iterator[Redis]:
    conn = Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


class FreshContextClient(FlaskClient):
    """Each request gets its own app context, as in production.

    Tests hold an app context (for ``db.session``); without this, requests would reuse it and
    share ``g`` (and its cached CSRF token) and the test's database session.
    """

    def open(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        with self.application.app_context():
            return super().open(*args, **kwargs)


@pytest.fixture()
def client(app: Flask, db: object) -> FlaskClient:
    app.test_client_class = FreshContextClient
    return app.test_client()


@pytest.fixture()
def runner(app: Flask, db: object):  # type: ignore[no-untyped-def]
    return app.test_cli_runner()


@pytest.fixture()
def fast_routing(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plan delivery waves with a short solver budget (tests check feasibility, not quality)."""
    monkeypatch.setitem(app.config, "ROUTING_TIME_LIMIT_S", 3)


# One localstripe server for the whole run, shared by every test that pays.
from tests.stripe_server import card, localstripe_url, stripe_client, stripe_config  # noqa: E402,F401
