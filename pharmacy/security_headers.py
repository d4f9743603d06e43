"""Security headers (flask-talisman): a CSP without inline scripts, no framing, HSTS in
production, a strict referrer policy."""

from __future__ import annotations

from collections import OrderedDict
from urllib.parse import urlsplit

from flask import Flask, current_app
from flask_talisman import Talisman


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


def content_security_policy(config: dict[str, object]) -> dict[str, list[str]]:
    """Scripts only from this site and Stripe (or the local Stripe stand-in); no inline code."""
    stripe = _origin(str(config.get("STRIPE_API_BASE") or "")) or "https://js.stripe.com"
    stripe_api = _origin(str(config.get("STRIPE_API_BASE") or "")) or "https://api.stripe.com"
    tiles = _origin(str(config.get("MAP_TILE_URL") or "").replace("{s}", "a"))
    images = ["'self'", "data:"] + ([tiles] if tiles else [])
    return {
        "default-src": ["'self'"],
        "script-src": ["'self'", stripe],
        "style-src": ["'self'"],
        "img-src": images,
        "connect-src": ["'self'", stripe_api],
        "frame-src": [stripe, "https://hooks.stripe.com"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    }


class _LivePolicy(OrderedDict[str, list[str]]):
    """The policy read from the current app's settings at each response (Stripe's and the
    map tiles' origins can be configured after the app is built)."""

    def items(self):  # type: ignore[no-untyped-def,override]
        return content_security_policy(current_app.config).items()


def init_security_headers(app: Flask) -> None:
    production = app.config.get("ENV") == "production"
    # One Talisman per app: its settings live on the instance, and tests build several apps.
    talisman = Talisman()
    app.extensions["dispensary.talisman"] = talisman
    talisman.init_app(
        app,
        content_security_policy=content_security_policy(app.config),
        force_https=production,              # TLS ends at the proxy in front in production
        strict_transport_security=production,
        strict_transport_security_max_age=31_536_000,
        session_cookie_secure=bool(app.config.get("SESSION_COOKIE_SECURE")),
        session_cookie_http_only=True,
        frame_options="DENY",
        referrer_policy="strict-origin-when-cross-origin",
        permissions_policy={"geolocation": "(self)", "camera": "()", "microphone": "()"},
    )
    talisman.content_security_policy = _LivePolicy(content_security_policy(app.config))
