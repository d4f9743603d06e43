"""Photo proof of delivery, served only to pharmacists, admins and the courier of the route."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, g, send_file

from ..extensions import db
from ..models import Role
from ..services import delivery
from ..services.photos import PhotoStore, media_type
from .session import require_role

bp = Blueprint("proof", __name__, url_prefix="/delivery-photos")
bp.before_request(require_role(Role.PHARMACIST, Role.ADMIN, Role.COURIER))


@bp.get("/<int(max=2147483647):attempt_id>")
def photo(attempt_id: int) -> Any:
    name = delivery.photo_of_attempt(db.session, g.user, attempt_id)  # 404 unless allowed
    store = PhotoStore.from_settings(current_app.config, current_app.instance_path)
    response = send_file(store.path(name), mimetype=media_type(name), conditional=True,
                         download_name=f"delivery-{attempt_id}.{name.rpartition('.')[2]}")
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Content-Disposition"] = (
        f'inline; filename="delivery-{attempt_id}.{name.rpartition(".")[2]}"')
    return response
