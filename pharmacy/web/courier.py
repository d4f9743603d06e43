"""Pages for couriers (mobile first, one-handed): today's route, stops, proof of delivery."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    current_app,
    g,
    render_template,
)
from flask_wtf import FlaskForm

from ..extensions import db
from ..models import DeliveryRoute, Order, Pharmacy, Role
from ..models.base import utcnow
from ..services import dashboards, delivery, prescriptions
from . import maps
from .session import require_role

bp = Blueprint("courier", __name__, url_prefix="/courier")
bp.before_request(require_role(Role.COURIER))
_ID = "<int(max=2147483647):stop_id>"


class ActionForm(FlaskForm):  # type: ignore[misc]
    """CSRF only."""


def _courier() -> Any:
    return delivery.courier_of(db.session, g.user)


@bp.get("/")
def home() -> Any:
    courier = _courier()
    today = utcnow().astimezone(prescriptions.LONDON).date()
    routes = delivery.routes_for(db.session, courier, day=today)
    return render_template("courier/home.html", routes=routes, form=ActionForm(),
                           summary=dashboards.courier_summary(db.session, g.user),
                           tz=prescriptions.LONDON)


@bp.get("/routes/<int(max=2147483647):route_id>")
def route(route_id: int) -> Any:
    courier = _courier()
    found = db.session.get(DeliveryRoute, route_id)
    if found is None or found.courier_id != courier.id:
        return render_template("error.html", status=403, title="Forbidden",
                               detail="This route belongs to another courier."), 403
    pharmacy = db.session.get(Pharmacy, found.wave.pharmacy_id)
    stops = [(s, db.session.get(Order, s.order_id)) for s in found.stops]
    from markupsafe import Markup

    from ..models import Address

    points = []
    for _stop, order in stops:
        address = db.session.get(Address, order.address_id) if order and order.address_id else None
        if address is not None and address.latitude is not None:
            points.append((address.latitude, address.longitude))
    depot = (pharmacy.latitude, pharmacy.longitude) if pharmacy else None
    # Drawn from coordinates only (no user text), so the SVG is safe markup; it needs no
    # map tiles, so it works with no network.
    route_map = Markup(maps.routes_svg(depot, [points])) if depot else None
    return render_template("courier/route.html", route=found, stops=stops, pharmacy=pharmacy,
                           form=ActionForm(), tz=prescriptions.LONDON, route_map=route_map,
                           tile_url=current_app.config.get("MAP_TILE_URL", ""))
