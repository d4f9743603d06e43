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
    # Cross-field rules marshmallow checks in code, stated in the schema for clients too.
    line = api.spec.components.schemas.get("LineIn")
    if line is not None:  # an order line names exactly one of the two
        line["oneOf"] = [{"required": ["prescription_item_id"]}, {"required": ["medicine_id"]}]
