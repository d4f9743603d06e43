"""Rate limits on sign-in and registration (Flask-Limiter, counters in Redis).

Sign-in (the login page, its second step and the API token) is limited per client IP (every
attempt, and failed attempts separately) and per account identifier and client IP (failed
attempts only, so the sixth wrong password within a minute is refused whatever the password,
while a stranger's wrong passwords never use up the owner's allowance). The limits come
from settings and are read at each request. A refused request is a 429 with ``Retry-After``:
problem+json under ``/api/``, a readable page elsewhere; the first refusal of a window is an
audit event.

One ``Limiter`` per app, like Talisman: Flask-Limiter keeps its storage on the instance, and the
tests build several apps (one with a Redis that is down).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, current_app, g, render_template, request, session
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import problem_response
from .extensions import db

logger = logging.getLogger(__name__)

_EXT = "dispensary.limiter"
SIGN_IN_ENDPOINTS = ("auth.login", "auth.second_factor", "account.disable",
                     "auth.change_password", "api_auth.TokenResource")
REGISTER_ENDPOINTS = ("auth.register",)
# A forgotten password: asking for a link (each may e-mail someone) and using one; and the
# password asked when a registration's link is opened.
RESET_ENDPOINTS = ("auth.forgot_password", "auth.reset_password", "auth.confirm_registration")
# Where the second sign-in step keeps the account key of the password step.
PENDING_ACCOUNT_KEY = "pending_account_key"


def storage_uri(config: dict[str, Any] | Any) -> str:
    """RATELIMIT_STORAGE_URI if set, else the app's REDIS_URL in the spelling `limits` reads."""
    explicit = str(config.get("RATELIMIT_STORAGE_URI") or "")
    if explicit:
        return explicit
    url = str(config["REDIS_URL"])
    if url.startswith("unix://"):  # the embedded Redis of a first run (scripts/run.sh)
        return "redis+unix://" + url.removeprefix("unix://")
    return url


def client_ip() -> str:
    # With PROXY_FIX_X_FOR set, ProxyFix has already put the client's address here.
    return request.remote_addr or "unknown"


def account_key_for(email: str) -> str:
    """A keyed hash of the normalised e-mail: the limiter's key and logs never hold the address."""
    secret = str(current_app.config["SECRET_KEY"]).encode()
    digest = hmac.new(secret, email.strip().lower().encode(), hashlib.sha256).hexdigest()
    return f"acct-{digest[:24]}"


# Where the e-mail of the attempt is typed; the other sign-in steps belong to an account
# already known (the waiting sign-in, the signed-in user), whatever a form posts.
_EMAIL_ENDPOINTS = ("auth.login", "api_auth.TokenResource")


def _account_key() -> str:
    """The account an attempt is for, with the client's address: a stranger's wrong
    passwords use up only their own allowance, never the account owner's."""
    return f"{_account()}:{client_ip()}"


def _account() -> str:
    if request.endpoint in _EMAIL_ENDPOINTS:
        email: object = None
        if request.is_json:
            body = request.get_json(silent=True)
            email = body.get("email") if isinstance(body, dict) else None
        else:
            email = request.form.get("email")
        if isinstance(email, str) and email.strip():
            return account_key_for(email[:254])
        return "acct-none"
    pending = session.get(PENDING_ACCOUNT_KEY)
    if isinstance(pending, str) and pending:
        return pending
    user = g.get("user")  # a signed-in user confirming a change with a code
    if user is not None:
        return account_key_for(user.email)
    return "acct-none"


def count_failure(key: str) -> int:
    """One more failed sign-in under ``key`` in Redis, kept for the lockout period; how many
    there are now (0 when Redis cannot be reached)."""
    from redis.exceptions import RedisError

    from .extensions import get_redis

    try:
        redis = get_redis()
        failures = int(redis.incr(key))
        if failures == 1:
            redis.expire(key, int(current_app.config["LOGIN_LOCKOUT_S"]))
        return failures
    except RedisError:
        logger.warning("could not count a failed sign-in (Redis unavailable)")
        return 0


def unknown_account_counter(email: str) -> Callable[[], int]:
    """Counts failed sign-ins for an e-mail with no active account (in Redis, for the
    lockout period), so that such an address is 'locked' like a real one."""
    return lambda: count_failure(f"dispensary:unknown-sign-in:{account_key_for(email[:254])}")


def note_sign_in_failure() -> None:
    """Called by the sign-in views when an attempt failed; only those count as failures."""
    g.sign_in_failed = True


def _failed(response: Response) -> bool:
    return bool(g.get("sign_in_failed", False))


def _setting(name: str) -> Callable[[], str]:
    return lambda: str(current_app.config[name])


def _retry_after(limit: RequestLimit | None) -> int:
    if limit is None:
        return 60
    try:
        return max(1, math.ceil(limit.reset_at - time.time()))
    except Exception:  # noqa: BLE001 - storage gone between the check and now
        return int(limit.limit.get_expiry())


def _audit_breach(limit: RequestLimit | None, retry_after: int) -> None:
    """One audit event per limit key and window, however many requests it refuses."""
    from .services import audit

    if limit is None:
        return
    limiter: Limiter = current_app.extensions[_EXT]
    try:
        first = limiter.storage.incr(f"audited/{limit.key}", retry_after) == 1
    except Exception:  # noqa: BLE001 - without storage, audit every refusal rather than none
        first = True
    if not first:
        return
    scope = str(limit.request_args[-1])
    key = str(limit.request_args[-2])
    db.session.rollback()
    audit.record(db.session, action="auth.rate_limited", entity_type="rate_limit",
                 entity_id=scope[:64],
                 after={"limit": str(limit.limit), "endpoint": request.endpoint,
                        "key": key if key.startswith("acct-") else "ip",
                        "client_ip": client_ip(), "retry_after_s": retry_after},
                 request_id=g.get("request_id"))
    db.session.commit()


def _too_many_requests(err: RateLimitExceeded) -> Any:
    limiter: Limiter = current_app.extensions[_EXT]
    limit = limiter.current_limit
    retry_after = _retry_after(limit)
    try:
        _audit_breach(limit, retry_after)
    except Exception:  # the refusal stands even if the audit write fails
        db.session.rollback()
        logger.exception("could not audit a rate-limit refusal")
    minutes = math.ceil(retry_after / 60)
    wait = f"{retry_after} seconds" if retry_after < 120 else f"{minutes} minutes"
    if request.endpoint in REGISTER_ENDPOINTS:
        detail = f"Too many registrations from your network; try again in {wait}."
    elif request.endpoint in RESET_ENDPOINTS:
        detail = f"Too many password requests from your network; try again in {wait}."
    else:
        detail = f"Too many sign-in attempts; try again in {wait}."
    if request.path.startswith("/api/"):
        response = problem_response(429, "Too Many Requests", detail, code="too_many_attempts",
                                    extra={"retry_after": retry_after})
    else:
        response = current_app.make_response((render_template(
            "error.html", status=429, title="Too many attempts", detail=detail), 429))
    response.headers["Retry-After"] = str(retry_after)
    return response


def init_rate_limits(app: Flask) -> Limiter:
    """Bind a limiter to ``app`` and limit the sign-in and registration views.

    Call after every blueprint is registered: the limits wrap the registered view functions.
    """
    if app.config.get("PROXY_FIX_X_FOR"):
        app.wsgi_app = ProxyFix(app.wsgi_app,  # type: ignore[method-assign]
                                x_for=int(app.config["PROXY_FIX_X_FOR"]))
    limiter = Limiter(
        key_func=client_ip,
        storage_uri=storage_uri(app.config),
        storage_options={"socket_connect_timeout": 2, "socket_timeout": 5},
        # A moving window: "5 per minute" means any 60 seconds, not each clock minute.
        strategy="moving-window",
        key_prefix="dispensary",
        # Redis down: keep limiting in this process's memory rather than fail open or shut.
        in_memory_fallback_enabled=True,
        enabled=bool(app.config.get("RATELIMIT_ENABLED", True)),
    )
    limiter.init_app(app)
    # Its INFO lines name the key (a client address): the audit event records refusals instead.
    logging.getLogger("flask-limiter").setLevel(logging.WARNING)
    app.extensions[_EXT] = limiter
    app.register_error_handler(RateLimitExceeded, _too_many_requests)
    sign_in = [
        limiter.shared_limit(_setting("RATELIMIT_SIGN_IN_PER_IP"), scope="sign-in-ip",
                             methods=["POST"]),
        limiter.shared_limit(_setting("RATELIMIT_SIGN_IN_FAILURES_PER_IP"),
                             scope="sign-in-failures-ip", methods=["POST"], deduct_when=_failed),
        limiter.shared_limit(_setting("RATELIMIT_SIGN_IN_FAILURES_PER_ACCOUNT"),
                             scope="sign-in-failures-account", key_func=_account_key,
                             methods=["POST"], deduct_when=_failed),
    ]
    register = [limiter.limit(_setting("RATELIMIT_REGISTER_PER_IP"), scope="register-ip",
                              methods=["POST"])]
    reset = [limiter.limit(_setting("RATELIMIT_PASSWORD_RESET_PER_IP"),
                           scope="password-reset-ip", methods=["POST"])]
    for endpoints, limits in ((SIGN_IN_ENDPOINTS, sign_in), (REGISTER_ENDPOINTS, register),
                              (RESET_ENDPOINTS, reset)):
        for endpoint in endpoints:
            view: Any = app.view_functions[endpoint]
            for limit in limits:
                view = limit(view)
            app.view_functions[endpoint] = view
    return limiter


def reset_rate_limits(app: Flask) -> None:
    """Forget every counter (tests)."""
    app.extensions[_EXT].reset()
