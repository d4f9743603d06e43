"""Server-rendered pages, one blueprint per role."""

from __future__ import annotations

from decimal import Decimal

from flask import Flask

from .session import load_session_user


def _quantity(value: Decimal | int | None) -> str:
    """28.000 -> '28', 2.500 -> '2.5'; None -> '—'."""
    if value is None:
        return "—"
    text = format(Decimal(value).normalize(), "f")
    return text


def register_web(app: Flask) -> None:
    from . import account, admin, auth, courier, patient, pharmacist, planner, proof

    app.before_request(load_session_user)
    app.add_template_filter(_quantity, "quantity")
    app.context_processor(auth.inject_user)
    for module in (auth, account, patient, pharmacist, courier, admin, planner, proof):
        app.register_blueprint(module.bp)
