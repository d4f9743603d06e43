"""Pages for patients: medicines, shop, basket, checkout with card, order tracking."""

from __future__ import annotations

import secrets
from datetime import timedelta
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
    session,
    url_for,
)

from ..errors import DomainError, Forbidden
from ..extensions import db
from ..models import Pharmacy, Role
from ..models.base import utcnow
from ..services import basket as basket_service
from ..services import checkout, dashboards, orders, prescriptions, rebooking, slots
from .forms import ActionForm, whole_number
from .session import require_role

bp = Blueprint("patient", __name__, url_prefix="/patient")
bp.before_request(require_role(Role.PATIENT))
_ID = "<int(max=2147483647):order_id>"




def _patient() -> Any:
    patient = g.user.patient
    if patient is None:
        raise Forbidden("Your account is waiting for our pharmacist to check your details "
                        "and link it to your prescriptions; we will e-mail you.")
    return patient


def _pricing() -> orders.Pricing:
    return orders.Pricing.from_config(current_app.config)


def _basket() -> dict[str, int]:
    raw = session.get("basket")
    return dict(raw) if isinstance(raw, dict) else {}


def _today() -> Any:
    return utcnow().astimezone(prescriptions.LONDON).date()


@bp.get("/")
def home() -> Any:
    summary = dashboards.patient_summary(db.session, g.user)
    return render_template("patient/home.html", summary=summary, basket_size=len(_basket()))


@bp.get("/medicines")
def medicines() -> Any:
    rows = basket_service.my_medicines(db.session, _patient(), _today())
    return render_template("patient/medicines.html", rows=rows, form=ActionForm())


@bp.post("/medicines/<int(max=2147483647):item_id>/repeat")
def request_repeat(item_id: int) -> Any:
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".medicines"))
    status, new = prescriptions.request_repeat(db.session, _patient(), item_id, actor=g.user,
                                               request_id=g.get("request_id"))
    if new is None:
        db.session.rollback()
        flash(status.reason, "error")
    else:
        db.session.commit()
        flash("Repeat requested: a pharmacist will check it. You can order it now.", "info")
    return redirect(url_for(".medicines"))


@bp.get("/shop")
def shop() -> Any:
    return render_template("patient/shop.html", products=basket_service.otc_products(db.session),
                           form=ActionForm(), max_packs=orders.MAX_OTC_PACKS,
                           questions=basket_service.SAFETY_QUESTIONS)


@bp.post("/basket")
def add_to_basket() -> Any:
    form = ActionForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".basket"))
    key = request.form.get("key", "")
    kind, _, raw_id = key.partition(":")
    quantity = request.form.get("quantity", "1")
    if kind not in ("rx", "otc") or whole_number(raw_id) is None or whole_number(quantity) is None:
        flash("That item cannot be added.", "error")
        return redirect(url_for(".basket"))
    if kind == "otc" and not request.form.get("remove"):
        concerns = basket_service.safety_check(request.form)
        if concerns:
            flash("Please speak to our pharmacist before buying this: we need to check it is "
                  "right for you. Call us or use the message form.", "error")
            for question in concerns:
                flash(question, "error")
            return redirect(url_for(".shop"))
    basket = _basket()
    if request.form.get("remove"):
        basket.pop(key, None)
    else:
        basket[key] = max(1, min(int(quantity), orders.MAX_OTC_PACKS))
        flash("Added to your basket.", "info")
    session["basket"] = basket
    session.pop("checkout_key", None)  # a changed basket is a new order
    return redirect(url_for(".basket"))


@bp.get("/basket")
def basket() -> Any:
    patient = _patient()
    lines = basket_service.basket_lines(db.session, patient, _basket(), _pricing())
    pharmacy = (db.session.get(Pharmacy, patient.nominated_pharmacy_id)
                if patient.nominated_pharmacy_id else None)
    needs_fridge = any(line.cold_chain for line in lines)
    available = (slots.available_slots(db.session, pharmacy, needs_fridge=needs_fridge)
                 if pharmacy else [])
    db.session.commit()  # slots are created on first look
    session.setdefault("checkout_key", secrets.token_urlsafe(16))
    return render_template("patient/basket.html", lines=lines, slots=available,
                           addresses=patient.addresses, form=ActionForm(),
                           total=sum(line.price_minor for line in lines)
                           + _pricing().delivery_fee_minor,
                           needs_fridge=needs_fridge, tz=prescriptions.LONDON)


@bp.post("/checkout")
def place() -> Any:
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".basket"))
    patient = _patient()
    lines = basket_service.basket_lines(db.session, patient, _basket(), _pricing())
    address_id, slot_id = request.form.get("address_id", ""), request.form.get("slot_id", "")
    if not lines or whole_number(address_id) is None or whole_number(slot_id) is None:
        flash("Choose an address and a delivery slot for a basket with items.", "error")
        return redirect(url_for(".basket"))
    try:
        placed = orders.place_order(
            db.session, patient,
            orders.OrderRequest([line.request for line in lines], int(address_id), int(slot_id)),
            actor=g.user, pricing=_pricing(), idempotency_key=session.get("checkout_key"),
            request_id=g.get("request_id"),
            hold_for=timedelta(minutes=current_app.config["ORDER_HOLD_MINUTES"]))
    except DomainError as err:
        db.session.rollback()
        if isinstance(err, orders.OutOfStock):
            orders.keep_lost_demand(db.session, err, patient=patient)
        flash(err.detail, "error")
        for e in err.errors:
            flash(e["message"], "error")
        return redirect(url_for(".basket"))
    db.session.commit()
    session.pop("basket", None)
    session.pop("checkout_key", None)
    order = placed.order
    if order.total_minor == 0:
        checkout.authorise(db.session, order, actor=g.user, payment_method=None)
        db.session.commit()
        flash("Order placed. Nothing to pay.", "info")
        return redirect(url_for(".track", order_id=order.id))
    return redirect(url_for(".pay", order_id=order.id))


@bp.get(f"/orders/{_ID}/pay")
def pay(order_id: int) -> Any:
    order = orders.get_patient_order(db.session, _patient(), order_id)
    if order.status.value != "placed":
        return redirect(url_for(".track", order_id=order.id))
    cfg = current_app.config
    js_base = (cfg["STRIPE_API_BASE"].rstrip("/") + "/js.stripe.com/v3/"
               if cfg["STRIPE_API_BASE"] else "https://js.stripe.com/v3/")
    return render_template("patient/pay.html", order=order, form=ActionForm(), stripe_js=js_base,
                           publishable_key=cfg["STRIPE_PUBLISHABLE_KEY"] or "pk_test_missing",
                           api_base=cfg["STRIPE_API_BASE"],
                           payment=checkout.latest_payment(order))


@bp.post(f"/orders/{_ID}/setup-intent")
def setup_intent(order_id: int) -> Any:
    """JSON for checkout.js: a SetupIntent so Stripe.js can turn the card into a PaymentMethod."""
    from ..services import payments

    if not ActionForm().validate_on_submit():
        return jsonify(error="The page expired; reload it."), 400
    patient = _patient()
    orders.get_patient_order(db.session, patient, order_id)
    try:
        secret = payments.create_setup_intent(db.session, patient)
    except DomainError as err:
        db.session.rollback()
        return jsonify(error=err.detail), err.status
    db.session.commit()
    return jsonify(client_secret=secret)


@bp.post(f"/orders/{_ID}/pay")
def pay_submit(order_id: int) -> Any:
    """JSON for checkout.js: authorise with the PaymentMethod the page created at Stripe."""
    if not ActionForm().validate_on_submit():
        return jsonify(error="The page expired; reload it."), 400
    order = orders.get_patient_order(db.session, _patient(), order_id, lock=True)
    method = request.form.get("payment_method", "")
    if not method.startswith("pm_") or len(method) > 100:
        return jsonify(error="The card could not be read; check it and try again."), 422
    try:
        result = checkout.authorise(db.session, order, actor=g.user, payment_method=method,
                                    request_id=g.get("request_id"))
    except DomainError as err:
        db.session.rollback()
        return jsonify(error=err.detail), err.status
    db.session.commit()
    payment = result.payment
    return jsonify(status=payment.status.value if payment else "none",
                   client_secret=result.client_secret if payment and
                   payment.status.value == "requires_action" else None,
                   error=payment.last_error if payment else None,
                   next=url_for(".track", order_id=order.id))


@bp.post(f"/orders/{_ID}/confirm")
def pay_confirm(order_id: int) -> Any:
    if not ActionForm().validate_on_submit():
        return jsonify(error="The page expired; reload it."), 400
    order = orders.get_patient_order(db.session, _patient(), order_id, lock=True)
    result = checkout.confirm(db.session, order, actor=g.user, request_id=g.get("request_id"))
    db.session.commit()
    payment = result.payment
    return jsonify(status=payment.status.value if payment else "none",
                   error=payment.last_error if payment else None,
                   next=url_for(".track", order_id=order.id))


@bp.get("/orders")
def order_list() -> Any:
    return render_template("patient/orders.html",
                           orders=orders.patient_orders(db.session, _patient()))


TRACK_STEPS = ["placed", "awaiting_verification", "ready_to_pick", "packed",
               "out_for_delivery", "delivered"]


@bp.get(f"/orders/{_ID}")
def track(order_id: int) -> Any:
    order = orders.get_patient_order(db.session, _patient(), order_id)
    from ..services import delivery

    reason = rebooking.rebook_reason(db.session, order)
    new_slots = rebooking.bookable_slots(db.session, order) if reason else []
    page = render_template("patient/track.html", order=order, steps=TRACK_STEPS,
                           payment=checkout.latest_payment(order), tz=prescriptions.LONDON,
                           form=ActionForm(), tracking=delivery.tracking_for(db.session, order),
                           rebook_reason=reason, new_slots=new_slots)
    if reason:
        db.session.commit()  # slots are created on first look
    return page


@bp.post(f"/orders/{_ID}/delivery-slot")
def rebook(order_id: int) -> Any:
    back = redirect(url_for(".track", order_id=order_id))
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return back
    order = orders.get_patient_order(db.session, _patient(), order_id, lock=True)
    raw = request.form.get("slot_id", "")
    chosen = whole_number(raw)
    if chosen is None or not 0 < chosen <= 2_147_483_647:
        flash("Choose one of the delivery slots offered.", "error")
        return back
    try:
        result = rebooking.rebook_delivery(db.session, order, int(raw), actor=g.user,
                                           request_id=g.get("request_id"))
    except DomainError as err:
        db.session.rollback()
        _flash_domain_error(err)
        return back
    db.session.commit()
    if not result.replayed:
        start = order.delivery_window_start.astimezone(prescriptions.LONDON)  # type: ignore[union-attr]
        end = order.delivery_window_end.astimezone(prescriptions.LONDON)  # type: ignore[union-attr]
        flash(f"Your new delivery time is {start:%A %-d %B}, between {start:%H:%M} and "
              f"{end:%H:%M}.", "info")
    else:
        flash("Your order is already booked for that time.", "info")
    return back


@bp.post(f"/orders/{_ID}/cancel")
def cancel(order_id: int) -> Any:
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".track", order_id=order_id))
    order = orders.get_patient_order(db.session, _patient(), order_id, lock=True)
    try:
        checkout.cancel_order(db.session, order, actor=g.user, reason="cancelled by the patient",
                              request_id=g.get("request_id"))
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return redirect(url_for(".track", order_id=order_id))
    db.session.commit()
    flash("Order cancelled. Any payment hold has been released.", "info")
    return redirect(url_for(".track", order_id=order_id))


@bp.get("/profile")
def profile() -> Any:
    from ..services import patients

    return render_template("patient/profile.html", patient=_patient(), form=ActionForm(),
                           exemptions=patients.EXEMPTIONS,
                           pharmacies=db.session.query(Pharmacy).order_by(Pharmacy.name).all())


def _flash_domain_error(err: DomainError) -> None:
    flash(err.detail, "error")
    for e in err.errors:
        flash(e["message"], "error")


@bp.post("/profile")
def profile_update() -> Any:
    from ..services import patients

    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".profile"))
    values = request.form
    sync_day = values.get("sync_day", "")
    pharmacy_id = values.get("nominated_pharmacy_id", "")
    try:
        patients.update_profile(
            db.session, _patient(), actor=g.user, phone=values.get("phone"),
            charge_exemption=values.get("charge_exemption", ""),
            sync_day=whole_number(sync_day),
            uses_dose_pack=values.get("uses_dose_pack") == "yes",
            nominated_pharmacy_id=whole_number(pharmacy_id))
    except DomainError as err:
        db.session.rollback()
        _flash_domain_error(err)
        return redirect(url_for(".profile"))
    db.session.commit()
    flash("Profile saved.", "info")
    return redirect(url_for(".profile"))


@bp.post("/allergies")
def allergy_add() -> Any:
    from ..services import patients

    if ActionForm().validate_on_submit():
        try:
            if whole_number(request.form.get("remove", "")) is not None:
                patients.remove_allergy(db.session, _patient(), int(request.form["remove"]),
                                        actor=g.user)
            else:
                patients.add_allergy(db.session, _patient(), request.form.get("substance", ""),
                                     actor=g.user)
            db.session.commit()
        except DomainError as err:
            db.session.rollback()
            _flash_domain_error(err)
    return redirect(url_for(".profile"))


@bp.post("/addresses")
def address_add() -> Any:
    from ..services import patients

    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".profile"))
    values = request.form
    try:
        added = patients.add_address(
            db.session, _patient(), actor=g.user, line1=values.get("line1", ""),
            line2=values.get("line2"), city=values.get("city", ""),
            postcode=values.get("postcode", ""), delivery_notes=values.get("delivery_notes"),
            make_default=values.get("make_default") == "yes")
    except DomainError as err:
        db.session.rollback()
        _flash_domain_error(err)
        return redirect(url_for(".profile"))
    db.session.commit()
    flash("Address saved." if added.located else f"Address saved. {added.problem}",
          "info" if added.located else "error")
    return redirect(url_for(".profile"))


@bp.get("/dose-calendar")
def dose_calendar() -> Any:
    from ..services import dose_calendar as calendars

    raw = request.args.get("days", "28")
    days = whole_number(raw) or 0
    patient = _patient()
    try:
        calendar = calendars.calendar_for_patient(db.session, patient, _today(), days)
    except DomainError as err:
        _flash_domain_error(err)
        return redirect(url_for(".dose_calendar"))
    return render_template("patient/dose_calendar.html", calendar=calendar,
                           patient_name=f"{patient.given_name} {patient.family_name}")


@bp.get("/refill-sync")
def refill_sync() -> Any:
    from ..services import refill_sync as sync

    patient = _patient()
    if patient.sync_day is None:
        flash("Choose a monthly delivery day in your profile first.", "error")
        return redirect(url_for(".profile"))
    today = _today()
    proposal = sync.sync_plan_for_patient(db.session, patient,
                                          sync.next_sync_date(patient.sync_day, today),
                                          today=today)
    names = {h.item_id: h for h in proposal.held}
    return render_template("patient/refill_sync.html", proposal=proposal, names=names,
                           items={row.item.id: row.item.medication_display
                                  for row in basket_service.my_medicines(db.session, patient,
                                                                         today)})
