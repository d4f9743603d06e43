"""The JSON API under /api/v1, one blueprint per resource; OpenAPI at /api/openapi.json."""

from __future__ import annotations

from flask_smorest import Api
from flask_wtf.csrf import CSRFProtect


def register_api(api: Api, csrf: CSRFProtect) -> None:
    """Register every API blueprint. Bearer tokens, not cookies, so CSRF does not apply."""
    from . import auth, medicines, orders, payments, prescriptions

    for blp in (auth.blp, medicines.blp, prescriptions.blp, prescriptions.me_blp, orders.blp,
                orders.slots_blp, payments.blp, payments.cards_blp):
        csrf.exempt(blp)
        api.register_blueprint(blp)
