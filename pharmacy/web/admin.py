"""Pages for administrators."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from ..extensions import db
from ..models import Role
from ..services import dashboards
from .session import require_role

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.before_request(require_role(Role.ADMIN))


@bp.get("/")
def home() -> Any:
    return render_template("admin/home.html", summary=dashboards.admin_summary(db.session))
