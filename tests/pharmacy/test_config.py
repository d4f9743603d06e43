from __future__ import annotations

import pytest

from config import Config, ConfigError, parse_bool


def test_defaults_run_on_sqlite_under_instance_with_no_settings() -> None:
    config = Config.from_env({})
    assert config.SQLALCHEMY_DATABASE_URI.startswith("sqlite:///")
    assert config.SQLALCHEMY_DATABASE_URI.endswith("instance/dispensary.sqlite3")
    assert config.REDIS_URL == "redis://127.0.0.1:6379/0"
    assert not config.is_production


def test_production_refuses_to_start_without_secret_and_database() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Config.from_env({"DISPENSARY_ENV": "production"})
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Config.from_env({"DISPENSARY_ENV": "production", "SECRET_KEY": "x" * 40,
                         "REDIS_URL": "redis://r"})


MAIL = {"NOTIFY_BACKEND": "smtp", "SMTP_HOST": "mail.example.org",
        "PUBLIC_BASE_URL": "https://pharmacy.example.org",
        # A Fernet key made for these tests (production needs its own: see README).
        "FIELD_ENCRYPTION_KEYS": "7lW3cJkVd0J4vS1rXo0mBq8lZ0pG7yYb2YwF9cQe3aE="}


def test_production_refuses_to_only_log_its_messages() -> None:
    base = {"DISPENSARY_ENV": "production", "SECRET_KEY": "s" * 40,
            "DATABASE_URL": "postgres://u@db/pharmacy", "REDIS_URL": "redis://r"}
    for mail in ({}, {"NOTIFY_BACKEND": "console"}, {"NOTIFY_BACKEND": "smtp"}):
        with pytest.raises(ConfigError, match="NOTIFY_BACKEND=smtp and SMTP_HOST"):
            Config.from_env({**base, **mail})
    assert Config.from_env({**base, **MAIL}).NOTIFY_BACKEND == "smtp"


def test_production_builds_links_from_its_own_https_address() -> None:
    base = {"DISPENSARY_ENV": "production", "SECRET_KEY": "s" * 40,
            "DATABASE_URL": "postgres://u@db/pharmacy", "REDIS_URL": "redis://r", **MAIL}
    for address in ("", "http://pharmacy.example.org"):
        with pytest.raises(ConfigError, match="PUBLIC_BASE_URL"):
            Config.from_env({**base, "PUBLIC_BASE_URL": address})


def test_production_refuses_a_weak_secret() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        Config.from_env({"DISPENSARY_ENV": "production", "SECRET_KEY": "short",
                         "DATABASE_URL": "postgresql://db/x", "REDIS_URL": "redis://r"})


def test_production_with_required_values_gets_secure_cookies() -> None:
    config = Config.from_env({"DISPENSARY_ENV": "production", "SECRET_KEY": "s" * 40,
                              "DATABASE_URL": "postgres://u@db/pharmacy",
                              "REDIS_URL": "redis://cache:6379/0", **MAIL})
    assert config.is_production
    assert config.SESSION_COOKIE_SECURE is True
    assert config.SQLALCHEMY_DATABASE_URI == "postgresql+psycopg://u@db/pharmacy"


@pytest.mark.parametrize("raw,expected", [("true", True), ("1", True), ("YES", True),
                                          ("off", False), ("0", False), ("", False)])
def test_booleans_parse_strictly(raw: str, expected: bool) -> None:
    assert parse_bool("X", raw) is expected


def test_a_misspelt_boolean_is_an_error_not_false() -> None:
    with pytest.raises(ConfigError):
        Config.from_env({"SESSION_COOKIE_SECURE": "ture"})


def test_unknown_environment_name_is_refused() -> None:
    with pytest.raises(ConfigError):
        Config.from_env({"DISPENSARY_ENV": "prod"})


def test_integer_settings_are_checked() -> None:
    with pytest.raises(ConfigError):
        Config.from_env({"API_TOKEN_TTL_S": "an hour"})
    assert Config.from_env({"API_TOKEN_TTL_S": "60"}).API_TOKEN_TTL_S == 60


def test_the_reorder_service_level_is_read_and_checked() -> None:
    assert Config.from_env({}).REORDER_SERVICE_LEVEL == 0.95
    assert Config.from_env({"REORDER_SERVICE_LEVEL": "0.98"}).REORDER_SERVICE_LEVEL == 0.98
    for bad in ("98", "0.3", "1", "nan", "high"):
        with pytest.raises(ConfigError, match="REORDER_SERVICE_LEVEL"):
            Config.from_env({"REORDER_SERVICE_LEVEL": bad})


def test_the_photo_retention_is_read_and_at_least_a_day() -> None:
    assert Config.from_env({}).DELIVERY_PHOTO_RETENTION_DAYS == 180
    assert Config.from_env({"DELIVERY_PHOTO_RETENTION_DAYS": "30"}) \
        .DELIVERY_PHOTO_RETENTION_DAYS == 30
    for bad in ("0", "-5", "a year"):
        with pytest.raises(ConfigError, match="DELIVERY_PHOTO_RETENTION_DAYS"):
            Config.from_env({"DELIVERY_PHOTO_RETENTION_DAYS": bad})
