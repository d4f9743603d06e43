"""Pages for pharmacists: the verification queue and each prescription's detail and actions."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from ..errors import DomainError, InvalidRequest
from ..extensions import db
from ..models import PrescriptionStatus, Role
from ..services import dashboards, rx_view
from ..services import prescriptions as rx_service
from .forms import ActionForm
from .session import require_role

bp = Blueprint("pharmacist", __name__, url_prefix="/pharmacist")
bp.before_request(require_role(Role.PHARMACIST))

_ID = "<int(max=2147483647):prescription_id>"




@bp.get("/")
def home() -> Any:
    return render_template("pharmacist/home.html",
                           summary=dashboards.pharmacist_summary(db.session))


@bp.get("/prescriptions")
def queue() -> Any:
    show = request.args.get("show", "open")
    statuses = {
        "open": list(rx_service.OPEN_STATUSES),
        "verified": [PrescriptionStatus.VERIFIED],
        "rejected": [PrescriptionStatus.REJECTED],
        "dispensed": [PrescriptionStatus.DISPENSED],
    }.get(show, list(rx_service.OPEN_STATUSES))
    prescriptions = rx_service.verification_queue(db.session, statuses=statuses)
    return render_template("pharmacist/queue.html", prescriptions=prescriptions, show=show,
                           warnings_of=rx_service.warnings_of)


def _render_detail(prescription_id: int, status: int = 200) -> Any:
    rx = rx_service.get_prescription(db.session, prescription_id)
    return render_template(
        "pharmacist/detail.html", rx=rx, form=ActionForm(),
        groups=rx_view.findings_by_item(rx), warnings=rx_service.warnings_of(rx),
        history=rx_view.patient_history(db.session, rx),
        fhir=json.dumps(rx.source_bundle, indent=2, ensure_ascii=False),
        me=g.user,
    ), status


@bp.get(f"/prescriptions/{_ID}")
def detail(prescription_id: int) -> Any:
    return _render_detail(prescription_id)


_ACTIONS = {
    "verify": lambda rx, who, form: rx_service.verify(
        db.session, rx, who,
        {w.key: form.get(f"decision-{w.key}", "") for w in rx_service.warnings_of(rx)},
        note=form.get("note") or None, request_id=g.get("request_id")),
    "second-check": lambda rx, who, form: rx_service.second_check(
        db.session, rx, who, note=form.get("note") or None, request_id=g.get("request_id")),
    "reject": lambda rx, who, form: rx_service.reject(
        db.session, rx, who, form.get("reason", ""), request_id=g.get("request_id")),
    "query": lambda rx, who, form: rx_service.query(
        db.session, rx, who, form.get("question", ""), request_id=g.get("request_id")),
    "answer": lambda rx, who, form: rx_service.answer_query(
        db.session, rx, who, form.get("answer", ""), request_id=g.get("request_id")),
    "dispense": lambda rx, who, form: rx_service.mark_dispensed(
        db.session, rx, who, request_id=g.get("request_id")),
}

_DONE = {"verify": "Recorded your check.", "second-check": "Second check recorded: verified.",
         "reject": "Rejected; the prescriber and patient will be told.",
         "query": "Query recorded; the prescription is on hold.",
         "answer": "Answer recorded; the prescription is back in the queue.",
         "dispense": "Recorded as dispensed."}


_ANY_ACTION = ",".join(repr(a) for a in _ACTIONS)


@bp.post(f"/prescriptions/{_ID}/<any({_ANY_ACTION}):action>")
def act(prescription_id: int, action: str) -> Any:
    form = ActionForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".detail", prescription_id=prescription_id))
    rx = rx_service.get_prescription(db.session, prescription_id, lock=True)
    try:
        _ACTIONS[action](rx, g.user, request.form)
    except InvalidRequest as err:
        db.session.rollback()
        flash(err.detail, "error")
        for e in err.errors:
            flash(e["message"], "error")
        return _render_detail(prescription_id, 422)
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return _render_detail(prescription_id, err.status)
    db.session.commit()
    flash(_DONE[action], "info")
    return redirect(url_for(".detail", prescription_id=prescription_id))


@bp.get("/patients/<int(max=2147483647):patient_id>/packing-list")
def packing_list(patient_id: int) -> Any:
    """The multi-dose pack for a patient: what goes in each day's compartments."""
    from ..errors import NotFound
    from ..models import PatientProfile
    from ..models.base import utcnow
    from ..services import dose_calendar as calendars

    patient = db.session.get(PatientProfile, patient_id)
    if patient is None:
        raise NotFound(f"No patient {patient_id}.")
    raw = request.args.get("days", "7")
    days = int(raw) if raw.isdigit() else 7
    start = utcnow().astimezone(rx_service.LONDON).date()
    calendar = calendars.calendar_for_patient(db.session, patient, start, days)
    return render_template("pharmacist/packing.html", patient=patient,
                           packing=calendars.packing_list(calendar))


# --- stock -------------------------------------------------------------------------------------

def _pharmacy_id() -> int:
    from sqlalchemy import select

    from ..models import Pharmacy

    pharmacy_id = db.session.scalar(select(Pharmacy.id).order_by(Pharmacy.id))
    if pharmacy_id is None:
        from ..errors import NotFound

        raise NotFound("No pharmacy is set up yet.")
    return int(pharmacy_id)


@bp.get("/stock")
def stock() -> Any:
    """Near-expiry batches, and the ledger check."""
    from ..services import inventory_ledger as ledger

    raw = request.args.get("days", "30")
    days = min(int(raw), 365) if raw.isdigit() else 30
    pharmacy_id = _pharmacy_id()
    return render_template("pharmacist/stock.html", days=days, form=ActionForm(),
                           near=ledger.near_expiry(db.session, pharmacy_id=pharmacy_id,
                                                   within_days=days),
                           discrepancies=ledger.ledger_discrepancies(db.session,
                                                                     pharmacy_id=pharmacy_id))


@bp.post("/recalls")
def recall() -> Any:
    from ..services import inventory_ledger as ledger

    form = ActionForm()
    medicine_id = request.form.get("medicine_id", "")
    lot = request.form.get("lot_number", "").strip()[:64]
    reason = request.form.get("reason", "").strip()
    if not form.validate_on_submit() or not medicine_id.isdigit() or not lot or not reason:
        flash("Give the medicine, the lot number and the recall notice.", "error")
        return redirect(url_for(".stock"))
    try:
        report = ledger.recall_lot(db.session, medicine_id=int(medicine_id), lot_number=lot,
                                   reason=reason, actor=g.user)
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return redirect(url_for(".stock"))
    db.session.commit()
    return render_template("pharmacist/recall.html", report=report, lot=lot, reason=reason)


@bp.get("/cd-registers")
def cd_registers() -> Any:
    from sqlalchemy import select

    from ..models import CDRegister

    registers = db.session.scalars(select(CDRegister).order_by(CDRegister.id)).all()
    return render_template("pharmacist/cd_registers.html", registers=registers)


@bp.get("/cd-registers/<int(max=2147483647):register_id>")
def cd_register(register_id: int) -> Any:
    from ..errors import NotFound
    from ..models import CDRegister
    from ..services import inventory_ledger as ledger

    register = db.session.get(CDRegister, register_id)
    if register is None:
        raise NotFound(f"No register {register_id}.")
    check = ledger.check_register(db.session, register.pharmacy_id, register.medicine_id,
                                  actor=g.user)
    db.session.commit()  # a discrepancy is audited
    return render_template("pharmacist/cd_register.html", register=register, check=check)


@bp.get("/reorders")
def reorders() -> Any:
    from markupsafe import Markup

    from ..services import forecasting

    pharmacy_id = _pharmacy_id()
    suggestions = forecasting.open_suggestions(db.session, pharmacy_id)
    # chart_svg builds the SVG from numbers only (no text from users), so it is safe markup.
    charts = {s.id: Markup(forecasting.chart_svg(s.chart)) for s in suggestions}
    risks = forecasting.expiry_risk(db.session, pharmacy_id, today=_today_london())
    return render_template("pharmacist/reorders.html", suggestions=suggestions, charts=charts,
                           risks=risks, form=ActionForm())


def _today_london() -> Any:
    from ..models.base import utcnow

    return utcnow().astimezone(rx_service.LONDON).date()


@bp.post("/reorders")
def reorders_accept() -> Any:
    from ..services import forecasting

    form = ActionForm()
    ids = [int(v) for v in request.form.getlist("suggestion") if v.isdigit()]
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".reorders"))
    try:
        order = forecasting.accept_suggestions(db.session, _pharmacy_id(), ids,
                                               supplier=request.form.get("supplier", ""),
                                               actor=g.user)
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return redirect(url_for(".reorders"))
    db.session.commit()
    flash(f"Purchase order {order.reference} drafted with {len(order.lines)} line(s).", "info")
    return redirect(url_for(".reorders"))
