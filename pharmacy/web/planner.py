"""The delivery planner's pages (pharmacists and admins): waves on a map and a table."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy import select

from ..errors import DomainError, NotFound
from ..extensions import db
from ..models import Address, DeliverySlot, DeliveryWave, Order, Pharmacy, Role
from ..models.base import utcnow
from ..services import delivery, prescriptions
from . import maps
from .forms import ActionForm, whole_number
from .session import require_role

bp = Blueprint("planner", __name__, url_prefix="/planner")
bp.before_request(require_role(Role.PHARMACIST, Role.ADMIN))




def _pharmacy() -> Pharmacy:
    pharmacy = db.session.scalar(select(Pharmacy).order_by(Pharmacy.id))
    if pharmacy is None:
        raise NotFound("No pharmacy is set up yet.")
    return pharmacy


def _relay() -> None:
    from ..jobs.outbox import relay_now

    relay_now()


@bp.get("/")
def waves() -> Any:
    raw = request.args.get("day", "")
    try:
        day = date.fromisoformat(raw) if raw else utcnow().astimezone(prescriptions.LONDON).date()
    except ValueError:
        day = utcnow().astimezone(prescriptions.LONDON).date()
    pharmacy = _pharmacy()
    rows = delivery.waves_on(db.session, pharmacy, day)
    counts = {slot.id: db.session.query(Order).filter(Order.delivery_slot_id == slot.id).count()
              for slot, _ in rows}
    db.session.commit()
    return render_template("planner/waves.html", rows=rows, counts=counts, day=day,
                           previous=day - timedelta(days=1), following=day + timedelta(days=1),
                           form=ActionForm(), tz=prescriptions.LONDON)


@bp.post("/slots/<int(max=2147483647):slot_id>/plan")
def plan_slot(slot_id: int) -> Any:
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".waves"))
    slot = db.session.get(DeliverySlot, slot_id)
    if slot is None:
        raise NotFound(f"No slot {slot_id}.")
    wave = delivery.close_wave(db.session, slot, actor=g.user)
    db.session.commit()
    _relay()
    flash("Planning queued; the routes appear here in a moment.", "info")
    return redirect(url_for(".wave", wave_id=wave.id))


@bp.get("/waves/<int(max=2147483647):wave_id>")
def wave(wave_id: int) -> Any:
    found = db.session.get(DeliveryWave, wave_id)
    if found is None:
        raise NotFound(f"No wave {wave_id}.")
    pharmacy = db.session.get(Pharmacy, found.pharmacy_id)
    assert pharmacy is not None
    routes, drawn = [], []
    for route in found.routes:
        stops = [(s, db.session.get(Order, s.order_id)) for s in route.stops]
        points = []
        for _stop, order in stops:
            address = db.session.get(Address, order.address_id) \
                if order and order.address_id else None
            if address is not None and address.latitude is not None \
                    and address.longitude is not None:
                points.append((address.latitude, address.longitude))
        routes.append((route, stops))
        drawn.append(points)
    from ..models import DeliveryStop, StopStatus

    unserved = db.session.scalars(select(DeliveryStop).where(
        DeliveryStop.wave_id == found.id, DeliveryStop.status == StopStatus.UNSERVED)).all()
    return render_template(
        "planner/wave.html", wave=found, routes=routes, unserved=unserved, form=ActionForm(),
        tz=prescriptions.LONDON,
        wave_map=Markup(maps.routes_svg((pharmacy.latitude, pharmacy.longitude), drawn,
                                        width=640, height=420)))


@bp.post("/waves/<int(max=2147483647):wave_id>/replan")
def replan(wave_id: int) -> Any:
    found = db.session.get(DeliveryWave, wave_id)
    if found is None:
        raise NotFound(f"No wave {wave_id}.")
    if ActionForm().validate_on_submit():
        try:
            delivery.replan(db.session, found, actor=g.user)
            db.session.commit()
            _relay()
            flash("Re-planning queued.", "info")
        except DomainError as err:
            db.session.rollback()
            flash(err.detail, "error")
    return redirect(url_for(".wave", wave_id=wave_id))


@bp.post("/waves/<int(max=2147483647):wave_id>/moves")
def move(wave_id: int) -> Any:
    stop_id, route_id = request.form.get("stop_id", ""), request.form.get("route_id", "")
    stop, route = whole_number(stop_id), whole_number(route_id)
    if ActionForm().validate_on_submit() and stop is not None and route is not None:
        try:
            delivery.move_stop(db.session, stop, route, actor=g.user)
            db.session.commit()
            flash("Stop moved.", "info")
        except DomainError as err:
            db.session.rollback()
            flash(err.detail, "error")
    return redirect(url_for(".wave", wave_id=wave_id))
