"""Pages for pharmacists."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from ..extensions import db
from ..models import Role
from ..services import dashboards
from .session import require_role

bp = Blueprint("pharmacist", __name__, url_prefix="/pharmacist")
bp.before_request(require_role(Role.PHARMACIST))


@bp.get("/")
def home() -> Any:
    return render_template("pharmacist/home.html",
                           summary=dashboards.pharmacist_summary(db.session))
