"""Pages for patients."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, render_template

from ..extensions import db
from ..models import Role
from ..services import dashboards
from .session import require_role

bp = Blueprint("patient", __name__, url_prefix="/patient")
bp.before_request(require_role(Role.PATIENT))


@bp.get("/")
def home() -> Any:
    summary = dashboards.patient_summary(db.session, g.user)
    return render_template("patient/home.html", summary=summary)
