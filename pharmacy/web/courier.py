"""Pages for couriers (mobile first)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, render_template

from ..extensions import db
from ..models import Role
from ..services import dashboards
from .session import require_role

bp = Blueprint("courier", __name__, url_prefix="/courier")
bp.before_request(require_role(Role.COURIER))


@bp.get("/")
def home() -> Any:
    return render_template("courier/home.html",
                           summary=dashboards.courier_summary(db.session, g.user))
