"""Pages for couriers (mobile first, one-handed): today's route, stops, proof of delivery."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import DomainError
from ..extensions import db
from ..models import DeliveryRoute, Order, Pharmacy, Role
from ..models.base import utcnow
from ..services import dashboards, delivery, prescriptions
from ..services.photos import PhotoStore
from . import maps
from .forms import ActionForm
from .session import require_role

bp = Blueprint("courier", __name__, url_prefix="/courier")
bp.before_request(require_role(Role.COURIER))
_ID = "<int(max=2147483647):stop_id>"




def _courier() -> Any:
    return delivery.courier_of(db.session, g.user)


@bp.get("/")
def home() -> Any:
    courier = g.user.courier  # an account not yet linked to a courier record has no routes
    today = utcnow().astimezone(prescriptions.LONDON).date()
    routes = delivery.routes_for(db.session, courier, day=today) if courier else []
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
        if address is not None and address.latitude is not None \
                and address.longitude is not None:
            points.append((address.latitude, address.longitude))
    depot = (pharmacy.latitude, pharmacy.longitude) if pharmacy else None
    # Drawn from coordinates only (no user text), so the SVG is safe markup; it needs no
    # map tiles, so it works with no network.
    route_map = Markup(maps.routes_svg(depot, [points])) if depot else None
    import json

    return render_template("courier/route.html", route=found, stops=stops, pharmacy=pharmacy,
                           form=ActionForm(), tz=prescriptions.LONDON, route_map=route_map,
                           tile_url=current_app.config.get("MAP_TILE_URL", ""),
                           tile_attribution=current_app.config.get("MAP_TILE_ATTRIBUTION", ""),
                           points_json=json.dumps(points), depot_json=json.dumps(depot))


@bp.post("/routes/<int(max=2147483647):route_id>/start")
def start(route_id: int) -> Any:
    courier = _courier()
    found = db.session.get(DeliveryRoute, route_id)
    if found is None or found.courier_id != courier.id:
        return render_template("error.html", status=403, title="Forbidden",
                               detail="This route belongs to another courier."), 403
    if not ActionForm().validate_on_submit():
        flash("The page expired; try again.", "error")
        return redirect(url_for(".route", route_id=route_id))
    try:
        delivery.start_route(db.session, found, actor=g.user)
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return redirect(url_for(".route", route_id=route_id))
    db.session.commit()
    flash("Route started. Drive safely.", "info")
    return redirect(url_for(".route", route_id=route_id))


@bp.get(f"/stops/{_ID}")
def stop(stop_id: int) -> Any:
    courier = _courier()
    found = delivery.stop_for_courier(db.session, courier, stop_id)
    order = db.session.get(Order, found.order_id)
    assert order is not None
    controlled = delivery.needs_id_check(order)
    from ..models import Address

    address = db.session.get(Address, order.address_id) if order.address_id else None
    return render_template("courier/stop.html", stop=found, order=order, address=address,
                           controlled=controlled, reasons=delivery.FAILURE_REASONS,
                           form=ActionForm(), tz=prescriptions.LONDON)


def photo_store() -> PhotoStore:
    return PhotoStore.from_settings(current_app.config, current_app.instance_path)


def _uploaded_photo(store: PhotoStore) -> bytes | None:
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        return None
    return upload.stream.read(store.max_bytes + 1)  # never more than a byte past the limit


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(err: RequestEntityTooLarge) -> Any:
    # The whole request is over MAX_CONTENT_LENGTH (a photo far past its limit): courier.js
    # reads JSON, and the person a sentence.
    limit = current_app.config["DELIVERY_PHOTO_MAX_BYTES"] // 1_000_000
    return jsonify(error=f"The photo is too large (at most {limit} MB); take it again.",
                   code="photo_too_large", errors=[]), 413


@bp.post(f"/stops/{_ID}/actions")
def action(stop_id: int) -> Any:
    """JSON from courier.js (queued on the phone while offline; idempotent on its id)."""
    if not ActionForm().validate_on_submit():
        return jsonify(error="The page expired; reload it."), 400
    form = request.form
    lat, lon = form.get("latitude", ""), form.get("longitude", "")
    store = photo_store()
    try:
        result = delivery.record_action(
            db.session, g.user, stop_id, action=form.get("action", ""),
            client_action_id=form.get("client_action_id", ""),
            recipient_name=form.get("recipient_name"), signature_png=form.get("signature"),
            id_checked=form.get("id_checked") == "yes",
            failure_reason=form.get("failure_reason") or None,
            latitude=float(lat) if _is_number(lat) else None,
            longitude=float(lon) if _is_number(lon) else None,
            photo=_uploaded_photo(store), photo_store=store,
            recorded_at=_phone_time(form.get("recorded_at", "")))
    except DomainError as err:
        db.session.rollback()
        return jsonify(error=err.detail, errors=err.errors, code=err.code), err.status
    except StaleDataError:
        # The pharmacy changed the order at the same moment (a recall): the phone keeps
        # the action and sends it again, and then gets the real answer.
        db.session.rollback()
        return jsonify(error="The pharmacy changed this parcel just now; sending again.",
                       errors=[], code="concurrent_change"), 409
    db.session.commit()
    return jsonify(status=result.stop.status.value, replayed=result.replayed,
                   next=url_for(".route", route_id=result.stop.route_id))


def _phone_time(raw: str) -> datetime | None:
    """When the phone recorded a queued action (ISO 8601 with its offset), if readable."""
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _is_number(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True
