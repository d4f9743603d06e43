"""Configuration built from environment variables.

Nothing here runs at import time: ``Config.from_env()`` is called by ``create_app`` (or by the
worker) and is the only place that reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_DEV_SECRET = "dev-insecure-secret-key-change-me"  # development only; refused in production

PROJECT_ROOT = Path(__file__).resolve().parent


class ConfigError(RuntimeError):
    """The environment does not describe a runnable configuration."""


def parse_bool(name: str, raw: str) -> bool:
    """Parse a boolean setting strictly: anything but the usual spellings is an error."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be a boolean (true/false), got {raw!r}")


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _parse_fraction(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be a number from {low} to {high}, got {raw!r}")
    return value


def _default_sqlite_url() -> str:
    return f"sqlite:///{PROJECT_ROOT / 'instance' / 'dispensary.sqlite3'}"


@dataclass(frozen=True)
class Config:
    """Typed settings; Flask reads the upper-case attributes."""

    ENV: str = "development"
    SECRET_KEY: str = _DEV_SECRET
    SQLALCHEMY_DATABASE_URI: str = field(default_factory=_default_sqlite_url)
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    TESTING: bool = False
    WTF_CSRF_ENABLED: bool = True
    SESSION_COOKIE_HTTPONLY: bool = True
    SESSION_COOKIE_SAMESITE: str = "Lax"
    SESSION_COOKIE_SECURE: bool = False
    API_TOKEN_TTL_S: int = 3600
    LOGIN_MAX_FAILURES: int = 5
    LOGIN_LOCKOUT_S: int = 900
    # Rate limits (Flask-Limiter, "N per minute; M per hour"), kept in Redis (REDIS_URL) or in
    # RATELIMIT_STORAGE_URI when set. Sign-in covers the login page, its second step and the
    # API token; failures also count per account, across all three.
    RATELIMIT_ENABLED: bool = True
    RATELIMIT_STORAGE_URI: str = ""
    RATELIMIT_SIGN_IN_PER_IP: str = "60 per minute; 600 per hour"
    RATELIMIT_SIGN_IN_FAILURES_PER_IP: str = "20 per minute; 100 per hour"
    RATELIMIT_SIGN_IN_FAILURES_PER_ACCOUNT: str = "5 per minute"
    RATELIMIT_REGISTER_PER_IP: str = "10 per hour"
    RATELIMIT_PASSWORD_RESET_PER_IP: str = "10 per hour"
    # Reverse proxies in front that set X-Forwarded-For (the client IP the limits key on).
    PROXY_FIX_X_FOR: int = 0
    # Photo proof of delivery: stored outside the web root; empty means instance/delivery-photos.
    DELIVERY_PHOTO_DIR: str = ""
    DELIVERY_PHOTO_MAX_BYTES: int = 5_000_000
    # Days a proof-of-delivery photo (a doorstep, sometimes a face) is kept after the
    # attempt; then the nightly job deletes it. The attempt, recipient and signature stay.
    DELIVERY_PHOTO_RETENTION_DAYS: int = 180
    # Whole request bodies (a photo plus the form); larger ones are answered 413.
    MAX_CONTENT_LENGTH: int = 6_000_000
    # Real prescription bundles are a few kB; anything this large is a mistake or an attack.
    FHIR_MAX_BUNDLE_BYTES: int = 1_000_000
    # Pricing rule: NHS England prescription charge per item (exempt patients pay nothing).
    PRESCRIPTION_CHARGE_MINOR: int = 990
    DELIVERY_FEE_MINOR: int = 0
    CURRENCY: str = "GBP"
    # Controlled-drug schedules kept in the register (Schedule 2 by law; add 3 by choice).
    CD_REGISTER_SCHEDULES: str = "2"
    # Reorder policy: supplier lead time, review period, target service level.
    REORDER_LEAD_TIME_DAYS: int = 2
    REORDER_REVIEW_DAYS: int = 7
    REORDER_SERVICE_LEVEL: float = 0.95
    # Wall-clock budget of one wave's route planning.
    ROUTING_TIME_LIMIT_S: int = 20
    # Unpaid orders release their reserved stock after this long.
    ORDER_HOLD_MINUTES: int = 30
    STRIPE_API_KEY: str = ""
    STRIPE_API_BASE: str = ""
    STRIPE_WEBHOOK_SECRET: str = ""
    STRIPE_PUBLISHABLE_KEY: str = ""  # for Stripe.js in the checkout page
    GEOCODER: str = "nominatim"
    GEOCODER_URL: str = ""
    GEOCODER_USER_AGENT: str = "dispensary"
    OSRM_URL: str = ""
    # Map tiles for the courier's map (e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png);
    # empty: the route is drawn on a plain background, which needs no network.
    MAP_TILE_URL: str = ""
    MAP_TILE_ATTRIBUTION: str = ""
    # Where patients and staff reach the site (links in e-mails are built from it, never
    # from a request's Host header). Production needs an https:// address.
    PUBLIC_BASE_URL: str = "http://127.0.0.1:5000"
    # Keys of the columns encrypted at rest (the seeds of staff authenticator apps):
    # comma-separated Fernet keys, the first encrypts, all decrypt (rotation). Empty: one is
    # derived from SECRET_KEY (development and tests); production needs its own.
    FIELD_ENCRYPTION_KEYS: str = ""
    # Notifications: "console" logs them (development); "smtp" sends e-mail.
    NOTIFY_BACKEND: str = "console"
    # The console backend prints each message's text (the local demo, `make run`, so that a
    # link to confirm an account can be followed); never set where messages are real.
    NOTIFY_CONSOLE_SHOW_TEXT: bool = False
    SMTP_HOST: str = "localhost"
    SMTP_PORT: int = 25
    SMTP_FROM: str = "Dispensary <no-reply@localhost>"
    SMTP_USERNAME: str = ""
    SMTP_PASSWORD: str = ""
    SMTP_STARTTLS: bool = False
    LOG_LEVEL: str = "INFO"
    # flask-smorest / OpenAPI
    API_TITLE: str = "Dispensary API"
    API_VERSION: str = "v1"
    OPENAPI_VERSION: str = "3.0.3"
    OPENAPI_URL_PREFIX: str = "/api"
    OPENAPI_JSON_PATH: str = "openapi.json"
    SQLALCHEMY_TRACK_MODIFICATIONS: bool = False

    @property
    def is_production(self) -> bool:
        return self.ENV == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from ``environ`` (default ``os.environ``).

        Raises:
            ConfigError: a value cannot be parsed, or production lacks a required secret.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        simple = {
            "ENV": "DISPENSARY_ENV",
            "SECRET_KEY": "SECRET_KEY",
            "SQLALCHEMY_DATABASE_URI": "DATABASE_URL",
            "REDIS_URL": "REDIS_URL",
            "STRIPE_API_KEY": "STRIPE_API_KEY",
            "STRIPE_API_BASE": "STRIPE_API_BASE",
            "STRIPE_WEBHOOK_SECRET": "STRIPE_WEBHOOK_SECRET",
            "STRIPE_PUBLISHABLE_KEY": "STRIPE_PUBLISHABLE_KEY",
            "GEOCODER": "GEOCODER",
            "GEOCODER_URL": "GEOCODER_URL",
            "GEOCODER_USER_AGENT": "GEOCODER_USER_AGENT",
            "OSRM_URL": "OSRM_URL",
            "MAP_TILE_URL": "MAP_TILE_URL",
            "MAP_TILE_ATTRIBUTION": "MAP_TILE_ATTRIBUTION",
            "CD_REGISTER_SCHEDULES": "CD_REGISTER_SCHEDULES",
            "NOTIFY_BACKEND": "NOTIFY_BACKEND",
            "PUBLIC_BASE_URL": "PUBLIC_BASE_URL",
            "FIELD_ENCRYPTION_KEYS": "FIELD_ENCRYPTION_KEYS",
            "SMTP_HOST": "SMTP_HOST",
            "SMTP_FROM": "SMTP_FROM",
            "SMTP_USERNAME": "SMTP_USERNAME",
            "SMTP_PASSWORD": "SMTP_PASSWORD",
            "LOG_LEVEL": "LOG_LEVEL",
            "RATELIMIT_STORAGE_URI": "RATELIMIT_STORAGE_URI",
            "RATELIMIT_SIGN_IN_PER_IP": "RATELIMIT_SIGN_IN_PER_IP",
            "RATELIMIT_SIGN_IN_FAILURES_PER_IP": "RATELIMIT_SIGN_IN_FAILURES_PER_IP",
            "RATELIMIT_SIGN_IN_FAILURES_PER_ACCOUNT": "RATELIMIT_SIGN_IN_FAILURES_PER_ACCOUNT",
            "RATELIMIT_REGISTER_PER_IP": "RATELIMIT_REGISTER_PER_IP",
            "RATELIMIT_PASSWORD_RESET_PER_IP": "RATELIMIT_PASSWORD_RESET_PER_IP",
            "DELIVERY_PHOTO_DIR": "DELIVERY_PHOTO_DIR",
        }
        for attr, var in simple.items():
            if var in env:
                values[attr] = env[var]
        for attr, var in {"API_TOKEN_TTL_S": "API_TOKEN_TTL_S",
                          "FHIR_MAX_BUNDLE_BYTES": "FHIR_MAX_BUNDLE_BYTES",
                          "PRESCRIPTION_CHARGE_MINOR": "PRESCRIPTION_CHARGE_MINOR",
                          "DELIVERY_FEE_MINOR": "DELIVERY_FEE_MINOR",
                          "ORDER_HOLD_MINUTES": "ORDER_HOLD_MINUTES",
                          "SMTP_PORT": "SMTP_PORT",
                          "ROUTING_TIME_LIMIT_S": "ROUTING_TIME_LIMIT_S",
                          "REORDER_LEAD_TIME_DAYS": "REORDER_LEAD_TIME_DAYS",
                          "REORDER_REVIEW_DAYS": "REORDER_REVIEW_DAYS",
                          "PROXY_FIX_X_FOR": "PROXY_FIX_X_FOR",
                          "DELIVERY_PHOTO_MAX_BYTES": "DELIVERY_PHOTO_MAX_BYTES",
                          "DELIVERY_PHOTO_RETENTION_DAYS": "DELIVERY_PHOTO_RETENTION_DAYS",
                          "MAX_CONTENT_LENGTH": "MAX_CONTENT_LENGTH"}.items():
            if var in env:
                values[attr] = _parse_int(var, env[var])
        if int(str(values.get("DELIVERY_PHOTO_RETENTION_DAYS", 1))) < 1:
            raise ConfigError("DELIVERY_PHOTO_RETENTION_DAYS must be at least 1 (days a "
                              "proof-of-delivery photo is kept)")
        if "REORDER_SERVICE_LEVEL" in env:
            # A cycle service level: 50% means no safety stock, 100% infinite stock.
            values["REORDER_SERVICE_LEVEL"] = _parse_fraction(
                "REORDER_SERVICE_LEVEL", env["REORDER_SERVICE_LEVEL"], 0.5, 0.999)
        if "RATELIMIT_ENABLED" in env:
            values["RATELIMIT_ENABLED"] = parse_bool("RATELIMIT_ENABLED", env["RATELIMIT_ENABLED"])
        if "NOTIFY_CONSOLE_SHOW_TEXT" in env:
            values["NOTIFY_CONSOLE_SHOW_TEXT"] = parse_bool("NOTIFY_CONSOLE_SHOW_TEXT",
                                                            env["NOTIFY_CONSOLE_SHOW_TEXT"])
        if "SMTP_STARTTLS" in env:
            values["SMTP_STARTTLS"] = parse_bool("SMTP_STARTTLS", env["SMTP_STARTTLS"])
        if "SESSION_COOKIE_SECURE" in env:
            values["SESSION_COOKIE_SECURE"] = parse_bool(
                "SESSION_COOKIE_SECURE", env["SESSION_COOKIE_SECURE"]
            )
        env_name = str(values.get("ENV", cls.ENV))
        if env_name not in {"development", "production", "testing"}:
            raise ConfigError(f"DISPENSARY_ENV must be development, production or testing, "
                              f"got {env_name!r}")
        if "SQLALCHEMY_DATABASE_URI" in values:
            values["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(
                str(values["SQLALCHEMY_DATABASE_URI"])
            )
        if env_name == "production":
            missing = [v for v in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL") if not env.get(v)]
            if missing:
                raise ConfigError(f"production needs {', '.join(missing)} set")
            if env["SECRET_KEY"] == _DEV_SECRET or len(env["SECRET_KEY"]) < 32:
                raise ConfigError("production SECRET_KEY must be a random value of 32+ chars")
            if env.get("NOTIFY_BACKEND") != "smtp" or not env.get("SMTP_HOST"):
                # The console backend only logs: reminders and order messages would be
                # marked sent and lost for good.
                raise ConfigError("production needs NOTIFY_BACKEND=smtp and SMTP_HOST set")
            if not env.get("PUBLIC_BASE_URL", "").startswith("https://"):
                # E-mailed links (a password reset) are built from it: never from a Host
                # header an attacker chose, and never over plain http.
                raise ConfigError("production needs PUBLIC_BASE_URL=https://... (the site's "
                                  "address)")
            if not env.get("FIELD_ENCRYPTION_KEYS", "").strip():
                # Derived from SECRET_KEY, a leaked or rotated SECRET_KEY would give away,
                # or lock away, every authenticator seed.
                raise ConfigError("production needs FIELD_ENCRYPTION_KEYS (Fernet keys for "
                                  "the columns encrypted at rest)")
            values.setdefault("SESSION_COOKIE_SECURE", True)
        _check_fernet_keys(str(values.get("FIELD_ENCRYPTION_KEYS", "")))
        return cls(**values)  # type: ignore[arg-type]

    def with_overrides(self, **overrides: object) -> Config:
        """A copy with some settings replaced (tests use this)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown settings: {sorted(unknown)}")
        return replace(self, **overrides)  # type: ignore[arg-type]

    def as_flask_mapping(self) -> dict[str, object]:
        mapping: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        # SQL errors name the statement but not its values (an e-mail, a name): they are
        # logged with tracebacks, and patient data never goes to the logs.
        options: dict[str, object] = {"hide_parameters": True}
        if str(self.SQLALCHEMY_DATABASE_URI).startswith("postgresql"):
            # Sessions in UTC whatever the server's default, so that date() and the like
            # on timestamptz columns mean the same day everywhere (times are UTC in the DB).
            options["connect_args"] = {"options": "-c timezone=UTC"}
        mapping["SQLALCHEMY_ENGINE_OPTIONS"] = options
        return mapping


def split_keys(raw: str) -> list[str]:
    """The keys of a comma-separated key list (FIELD_ENCRYPTION_KEYS), blanks dropped."""
    return [k.strip() for k in raw.split(",") if k.strip()]


def _check_fernet_keys(raw: str) -> None:
    from cryptography.fernet import Fernet

    for position, key in enumerate(split_keys(raw), start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ConfigError(  # by position: a key's value never goes to a log
                f"FIELD_ENCRYPTION_KEYS: key {position} is not a Fernet key (32 url-safe "
                "base64 bytes; make one with: python -c \"from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())\")") from None


def normalise_database_url(url: str) -> str:
    """Accept the ``postgres://`` and ``postgresql://`` spellings platforms inject."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def config_for_tests(database_url: str, redis_url: str) -> Config:
    """Settings for the test suite: real database and Redis, CSRF on unless a test turns it off."""
    return Config(
        ENV="testing",
        TESTING=True,
        SECRET_KEY="test-secret-key-not-for-production-000",
        SQLALCHEMY_DATABASE_URI=normalise_database_url(database_url),
        REDIS_URL=redis_url,
    )
