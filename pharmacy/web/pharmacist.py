"""Pages for pharmacists: the verification queue and each prescription's detail and actions."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from ..errors import DomainError, InvalidRequest
from ..extensions import db
from ..models import Medicine, Pharmacy, PrescriptionStatus, Role
from ..services import checkout, dashboards, orders, rx_view
from ..services import inventory_ledger as ledger
from ..services import prescriptions as rx_service
from .forms import ActionForm, whole_number
from .session import require_role

bp = Blueprint("pharmacist", __name__, url_prefix="/pharmacist")
bp.before_request(require_role(Role.PHARMACIST))

_ID = "<int(max=2147483647):prescription_id>"
_BATCH = "<int(max=2147483647):batch_id>"
_ORDER = "<int(max=2147483647):order_id>"


@bp.get("/")
def home() -> Any:
    return render_template("pharmacist/home.html",
                           summary=dashboards.pharmacist_summary(db.session),
                           recalled=len(orders.recalled_parcels(db.session)))


@bp.get("/account-links")
def account_links() -> Any:

    return _render_links()


def _render_links(status: int = 200) -> Any:
    from ..services import patients

    links = patients.link_requests(db.session)
    held = {link.id: patients.held_record(db.session, link) for link in links}
    return render_template("pharmacist/account_links.html", links=links, held=held,
                           history=patients.number_history(db.session, links),
                           form=ActionForm()), status


@bp.post("/account-links/<int(max=2147483647):link_id>/<any(confirm, refuse):decision>")
def decide_account_link(link_id: int, decision: str) -> Any:
    from ..services import patients

    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".account_links"))
    try:
        link = patients.decide_link(db.session, link_id, confirm=decision == "confirm",
                                    note=request.form.get("note", ""), pharmacist=g.user)
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return _render_links(err.status)
    db.session.commit()
    flash(f"{link.user.email}: {'linked' if decision == 'confirm' else 'refused'}.", "info")
    return redirect(url_for(".account_links"))


@bp.get("/recalled-parcels")
def recalled_parcels() -> Any:
    return _render_recalled()


def _render_recalled(status: int = 200) -> Any:
    parcels = orders.recalled_parcels(db.session)
    return render_template("pharmacist/recalled_parcels.html", parcels=parcels,
                           form=ActionForm(), tz=rx_service.LONDON), status


@bp.post(f"/recalled-parcels/{_ORDER}/<any('received', 'followed-up'):outcome>")
def close_recall(order_id: int, outcome: str) -> Any:
    """A recalled parcel is back (refund it, units back on the books), or was delivered
    before the recall reached the courier and the patient has been contacted."""
    from ..services import delivery

    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".recalled_parcels"))
    try:
        delivery.lock_open_stops(db.session, order_id)  # the courier's lock order
        order = orders.get_order(db.session, order_id, lock=True)
        if outcome == "received":
            checkout.receive_recalled(db.session, order, actor=g.user,
                                      checked=request.form.get("checked") == "yes",
                                      request_id=g.get("request_id"))
            done = (f"{order.reference}: received back and refunded; its units are back on "
                    "the books, except fridge medicines, written off (their temperature since "
                    "they left cannot be vouched for). Write off anything else not fit to "
                    "supply again.")
        else:
            checkout.follow_up_recall(db.session, order, actor=g.user,
                                      note=request.form.get("note", ""),
                                      request_id=g.get("request_id"))
            done = f"{order.reference}: follow-up recorded; the recall is closed."
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return _render_recalled(err.status)
    db.session.commit()
    from ..jobs.outbox import relay_now

    relay_now()
    flash(done, "info")
    return redirect(url_for(".recalled_parcels"))


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
        undelivered=(rx_service.undelivered_orders(db.session, rx)
                     if rx.status is PrescriptionStatus.DISPENSED else []),
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
    "withdraw": lambda rx, who, form: rx_service.withdraw(
        db.session, rx, who, form.get("withdraw-reason", ""), request_id=g.get("request_id")),
    "end-owing": lambda rx, who, form: rx_service.end_owing(
        db.session, _item_of(rx, form.get("item_id", "")), who, form.get("owing-reason", ""),
        request_id=g.get("request_id")),
}


def _item_of(rx: Any, raw: str) -> Any:
    item_id = whole_number(raw)
    item = next((i for i in rx.items if i.id == item_id), None)
    if item is None:
        raise InvalidRequest("Choose an item of this prescription.",
                             errors=[{"field": "item_id", "message": "Not an item here."}])
    return item


_DONE = {"verify": "Recorded your check.", "second-check": "Second check recorded: verified.",
         "reject": "Rejected; the prescriber and patient will be told.",
         "query": "Query recorded; the prescription is on hold.",
         "answer": "Answer recorded; the prescription is back in the queue.",
         "dispense": "Recorded as dispensed.",
         "withdraw": "Withdrawn; orders waiting for it were cancelled, parcels already out "
                     "recalled (see Recalled parcels), and the patient told.",
         "end-owing": "The owing has ended; nothing more will be supplied on that item."}


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
    days = whole_number(raw)
    days = 7 if days is None else days
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


def _whole(raw: str, *, digits: int = 9) -> int | None:
    return whole_number(raw.strip(), digits=digits)


@bp.get("/stock")
def stock() -> Any:
    """Near-expiry batches, the ledger check, and a search for any batch."""
    days = min(_whole(request.args.get("days", "")) or 30, 365)
    q = request.args.get("q", "").strip()[:100]
    pharmacy_id = _pharmacy_id()
    return render_template("pharmacist/stock.html", days=days, form=ActionForm(), q=q,
                           medicines=ledger.receivable_medicines(db.session),
                           found=(ledger.find_batches(db.session, pharmacy_id=pharmacy_id,
                                                      text=q) if q else []),
                           near=ledger.near_expiry(db.session, pharmacy_id=pharmacy_id,
                                                   within_days=days),
                           discrepancies=ledger.ledger_discrepancies(db.session,
                                                                     pharmacy_id=pharmacy_id))


# --- goods in -----------------------------------------------------------------------------------

_RECEIPT_FIELDS = ("medicine_id", "lot_number", "expiry_date", "quantity", "supplier",
                   "reference", "location")
_MAX_UNITS = 1_000_000  # one delivery or count of one batch; more is a typing slip


def _units(raw: str, label: str, problems: list[str], *, allow_zero: bool = False) -> int:
    units = _whole(raw, digits=7)
    if units is None or units > _MAX_UNITS or (units == 0 and not allow_zero):
        least = "0" if allow_zero else "1"
        problems.append(f"{label} must be a whole number of units from {least} to "
                        f"{_MAX_UNITS:,}.")
        return 0
    return units


def _text(values: Mapping[str, str], name: str, label: str, problems: list[str], *,
          max_length: int, required: bool = True) -> str:
    value = values.get(name, "").strip()
    if required and not value:
        problems.append(f"Give the {label}.")
    elif len(value) > max_length:
        problems.append(f"The {label} is too long: at most {max_length} characters.")
    return value


def _render_goods_in(values: Mapping[str, str], status: int = 200) -> Any:
    return render_template(
        "pharmacist/goods_in.html", form=ActionForm(), values=values,
        medicines=ledger.receivable_medicines(db.session),
        due=ledger.outstanding_purchase_lines(db.session, _pharmacy_id()),
        today=_today_london()), status


@bp.get("/stock/goods-in")
def goods_in() -> Any:
    """The goods-in form; an open purchase order's "book in" link fills it in."""
    return _render_goods_in({k: request.args.get(k, "")[:200] for k in _RECEIPT_FIELDS})


@bp.post("/stock/goods-in")
def receive() -> Any:
    """Book in a delivery; a wrong field shows the form again as typed, with the reason."""
    form = ActionForm()
    values = {k: request.form.get(k, "") for k in _RECEIPT_FIELDS}
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return _render_goods_in(values, 400)
    problems: list[str] = []
    medicine_id = _whole(values["medicine_id"])
    medicine = db.session.get(Medicine, medicine_id) if medicine_id is not None else None
    if medicine is None or not medicine.is_active:
        problems.append("Choose the medicine from the formulary.")
    lot = _text(values, "lot_number", "lot number", problems, max_length=64)
    expiry: date | None = None
    try:
        expiry = date.fromisoformat(values["expiry_date"].strip())
    except ValueError:
        problems.append("Give the expiry date as printed on the pack (day, month, year).")
    quantity = _units(values["quantity"], "The quantity", problems)
    supplier = _text(values, "supplier", "supplier", problems, max_length=200)
    reference = _text(values, "reference", "delivery note or purchase order number", problems,
                      max_length=100)
    location = _text(values, "location", "location", problems, max_length=50, required=False)
    if problems or medicine is None or expiry is None:
        for problem in problems:
            flash(problem, "error")
        return _render_goods_in(values, 422)
    try:
        batch = ledger.receive(
            db.session, pharmacy=db.session.get_one(Pharmacy, _pharmacy_id()),
            medicine=medicine, lot_number=lot, expiry_date=expiry, quantity=quantity,
            supplier=supplier, reference=reference, location=location or None, actor=g.user,
            today=_today_london(),
            register_schedules=ledger.register_schedules(
                current_app.config.get("CD_REGISTER_SCHEDULES")))
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return _render_goods_in(values, err.status)
    db.session.commit()
    flash(f"Booked in {quantity} units of {medicine.name}, lot {lot}.", "info")
    return redirect(url_for(".batch", batch_id=batch.id))


# --- one batch: count, write off, quarantine, release ---------------------------------------

def _render_batch(batch_id: int, values: Mapping[str, str] | None = None,
                  status: int = 200) -> Any:
    batch = ledger.get_batch(db.session, batch_id, pharmacy_id=_pharmacy_id())
    return render_template("pharmacist/batch.html", batch=batch, form=ActionForm(),
                           values=values or {},
                           in_register=ledger.needs_register(
                               batch.medicine, ledger.register_schedules(
                                   current_app.config.get("CD_REGISTER_SCHEDULES"))),
                           movements=ledger.last_movements(db.session, batch.id)), status


@bp.get(f"/stock/batches/{_BATCH}")
def batch(batch_id: int) -> Any:
    return _render_batch(batch_id)


_REASON_MAX = 500


def _change_batch(action: str, batch_id: int, values: Mapping[str, str],
                  problems: list[str]) -> str | None:
    """Parse the action's fields and call its service; the message to show, or None."""
    if action == "count":
        counted = _units(values.get("counted", ""), "The count", problems, allow_zero=True)
        note = _text(values, "note", "note", problems, max_length=_REASON_MAX, required=False)
        if problems:
            return None
        movement = ledger.record_count(db.session, batch_id, counted, actor=g.user,
                                       note=note or None)
        if movement is None:
            return f"Count recorded: {counted} units, as on the books."
        change = movement.on_hand_change
        _warn_if_register_disagrees(movement.batch)
        return (f"Count recorded: {counted} units, {abs(change)} "
                f"{'more' if change > 0 else 'fewer'} than on the books.")
    if action == "move":
        location = _text(values, "location", "new location", problems,
                         max_length=ledger.LOCATION_MAX)
        note = _text(values, "note", "note", problems, max_length=_REASON_MAX, required=False)
        if problems:
            return None
        moved = ledger.move_batch(db.session, batch_id, location, actor=g.user,
                                  reason=note or None)
        return (f"Batch moved to {moved.batch.location}." if moved is not None
                else "The batch is already there.")
    reason = _text(values, "reason", "reason", problems, max_length=_REASON_MAX)
    if action == "write-off":
        quantity = _units(values.get("quantity", ""), "The quantity", problems)
        witness = _text(values, "witness", "witness name", problems, max_length=100,
                        required=False)
        if problems:
            return None
        ledger.write_off(db.session, batch_id, quantity, reason=reason, actor=g.user,
                         witness=witness or None,
                         register_schedules=ledger.register_schedules(
                             current_app.config.get("CD_REGISTER_SCHEDULES")))
        return f"Wrote off {quantity} units."
    if problems:
        return None
    if action == "quarantine":
        taken = ledger.quarantine(db.session, batch_id, reason=reason, actor=g.user)
        _flash_short_orders(taken.short_orders)
        return ("Batch quarantined: it will not be picked for orders until released, and "
                "what it held for orders has moved to other batches.")
    ledger.release_from_quarantine(db.session, batch_id, reason=reason, actor=g.user,
                                   today=_today_london())
    return "Batch released from quarantine: it can be picked for orders again."


def _flash_short_orders(short_orders: list[Any]) -> None:
    for short in short_orders:
        flash(f"Order {short.order.reference}: no other usable batch covers "
              f"{short.units} {short.medicine}; pack it short or cancel it.", "error")


def _warn_if_register_disagrees(batch: Any) -> None:
    """After a count of a register controlled drug, say (and audit) when the register's
    balance no longer matches the shelf: the law wants the discrepancy investigated and
    corrected in the register, never by editing the register's entries."""
    schedules = ledger.register_schedules(current_app.config.get("CD_REGISTER_SCHEDULES"))
    if not ledger.needs_register(batch.medicine, schedules):
        return
    check = ledger.check_register(db.session, batch.pharmacy_id, batch.medicine_id,
                                  actor=g.user)
    if not check.consistent:
        flash(f"{check.medicine} is kept in the controlled-drug register, which now "
              f"disagrees with the shelf: register {check.register_balance}, shelf "
              f"{check.physical_stock}. Investigate, then record a correction on the "
              "register.", "error")


@bp.post(f"/stock/batches/{_BATCH}/<any(count, 'write-off', quarantine, release, move):change>")
def batch_action(batch_id: int, change: str) -> Any:
    form = ActionForm()
    values = {"action": change, **{k: v for k, v in request.form.items() if k != "csrf_token"}}
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".batch", batch_id=batch_id))
    ledger.get_batch(db.session, batch_id, pharmacy_id=_pharmacy_id())  # 404 if not ours
    problems: list[str] = []
    try:
        done = _change_batch(change, batch_id, values, problems)
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return _render_batch(batch_id, values, err.status)
    if done is None:
        for problem in problems:
            flash(problem, "error")
        return _render_batch(batch_id, values, 422)
    db.session.commit()
    flash(done, "info")
    return redirect(url_for(".batch", batch_id=batch_id))


@bp.post("/recalls")
def recall() -> Any:
    form = ActionForm()
    medicine_id = _whole(request.form.get("medicine_id", ""))
    lot = request.form.get("lot_number", "").strip()[:64]
    reason = request.form.get("reason", "").strip()
    if not form.validate_on_submit() or medicine_id is None or not lot or not reason:
        flash("Give the medicine, the lot number and the recall notice.", "error")
        return redirect(url_for(".stock"))
    try:
        report = ledger.recall_lot(db.session, medicine_id=medicine_id, lot_number=lot,
                                   reason=reason, actor=g.user)
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return redirect(url_for(".stock"))
    db.session.commit()
    _flash_short_orders(report.short_orders)
    return redirect(url_for(".recall_report", batch_id=report.batches[0].id))


@bp.get(f"/recalls/{_BATCH}")
def recall_report(batch_id: int) -> Any:
    """The recall of a batch's lot, to come back to: who received it, what still holds it."""
    from sqlalchemy import select

    from ..errors import NotFound
    from ..models import BatchStatus, MovementKind, StockBatch, StockMovement

    batch = ledger.get_batch(db.session, batch_id, pharmacy_id=_pharmacy_id())
    if batch.status is not BatchStatus.RECALLED:
        raise NotFound("This batch has not been recalled.")
    lot = list(db.session.scalars(select(StockBatch).where(
        StockBatch.medicine_id == batch.medicine_id,
        StockBatch.lot_number == batch.lot_number).order_by(StockBatch.id)))
    notice = db.session.scalar(select(StockMovement.reason).where(
        StockMovement.batch_id == batch.id, StockMovement.kind == MovementKind.RECALLED)
        .order_by(StockMovement.id.desc()).limit(1)) or ""
    report = ledger.recall_report(db.session, [b.id for b in lot], lot)
    return render_template("pharmacist/recall.html", report=report, lot=batch.lot_number,
                           medicine=batch.medicine, reason=notice.removeprefix("recall: "))


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

    register = db.session.get(CDRegister, register_id)
    if register is None:
        raise NotFound(f"No register {register_id}.")
    return _render_register(register)


def _render_register(register: Any, values: Mapping[str, str] | None = None,
                     status: int = 200) -> Any:
    check = ledger.check_register(db.session, register.pharmacy_id, register.medicine_id,
                                  actor=g.user)
    db.session.commit()  # a discrepancy is audited
    return render_template("pharmacist/cd_register.html", register=register, check=check,
                           handovers=ledger.register_handovers(db.session, register.id),
                           prescribers=ledger.register_prescribers(db.session, register.id),
                           returned_orders={e.order_id for e in register.entries
                                            if e.kind.value == "return"},
                           form=ActionForm(), values=values or {}), status


@bp.post("/cd-registers/<int(max=2147483647):register_id>/corrections")
def cd_register_correction(register_id: int) -> Any:
    """A correction is a new entry that names the entry it corrects and why; the register's
    existing entries are never changed."""
    from ..errors import NotFound
    from ..models import CDRegister, CDRegisterEntry

    register = db.session.get(CDRegister, register_id)
    if register is None:
        raise NotFound(f"No register {register_id}.")
    form = ActionForm()
    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".cd_register", register_id=register_id))
    problems: list[str] = []
    entry_id = _whole(values.get("entry_id", ""))
    entry = db.session.get(CDRegisterEntry, entry_id) if entry_id else None
    if entry is None or entry.register_id != register.id:
        problems.append("Choose the entry of this register that the correction is for.")
    direction = values.get("direction", "")
    if direction not in ("add", "remove"):
        problems.append("Say whether the correction adds units to the balance or removes "
                        "them.")
    quantity = _units(values.get("quantity", ""), "The quantity", problems)
    reason = _text(values, "reason", "reason", problems, max_length=_REASON_MAX)
    if problems or entry is None:
        for problem in problems:
            flash(problem, "error")
        return _render_register(register, values, 422)
    delta = quantity if direction == "add" else -quantity
    try:
        added = ledger.correct_register_entry(db.session, entry.id, quantity_delta=delta,
                                              reason=reason, actor=g.user)
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return _render_register(register, values, err.status)
    db.session.commit()
    flash(f"Correction entered as entry {added.sequence}: balance {added.running_balance}.",
          "info")
    return redirect(url_for(".cd_register", register_id=register_id))


@bp.get("/reorders")
def reorders() -> Any:
    return _render_reorders()


def _render_reorders(status: int = 200) -> Any:
    from markupsafe import Markup

    from ..services import forecasting

    pharmacy_id = _pharmacy_id()
    suggestions = forecasting.open_suggestions(db.session, pharmacy_id)
    # chart_svg builds the SVG from numbers only (no text from users), so it is safe markup.
    charts = {s.id: Markup(forecasting.chart_svg(s.chart)) for s in suggestions}
    today = _today_london()
    risks = forecasting.expiry_risk(db.session, pharmacy_id, today=today)
    lost = forecasting.recent_lost_demand(db.session, pharmacy_id, today=today)
    return render_template("pharmacist/reorders.html", suggestions=suggestions, charts=charts,
                           risks=risks, lost=lost, form=ActionForm(),
                           default_level=current_app.config.get("REORDER_SERVICE_LEVEL",
                                                                0.95)), status


def _today_london() -> Any:
    from ..models.base import utcnow

    return utcnow().astimezone(rx_service.LONDON).date()


@bp.post("/reorders")
def reorders_accept() -> Any:
    from ..services import forecasting

    form = ActionForm()
    ids = [n for n in map(whole_number, request.form.getlist("suggestion")) if n is not None]
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
    flash(f"Purchase order {order.reference} drafted with {len(order.lines)} line(s). Check "
          "it, then mark it sent when it has gone to the wholesaler.", "info")
    return redirect(url_for(".purchase_order", order_id=order.id))


_PERCENT = re.compile(r"[0-9]{1,2}(?:\.[0-9])?")


@bp.post("/medicines/<int(max=2147483647):medicine_id>/reorder-settings")
def reorder_settings(medicine_id: int) -> Any:
    """A medicine's own service level and minimum order, from the reorders page."""
    from ..errors import NotFound
    from ..services import forecasting

    medicine = db.session.get(Medicine, medicine_id)
    if medicine is None:
        raise NotFound(f"No medicine {medicine_id}.")
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".reorders"))
    raw_level = request.form.get("service_level", "").strip().removesuffix("%").strip()
    raw_minimum = request.form.get("minimum_order_quantity", "").strip()
    problems = []
    level = None
    if raw_level:
        if _PERCENT.fullmatch(raw_level) and 50 <= float(raw_level) <= 99.9:
            level = round(float(raw_level) / 100, 4)
        else:
            problems.append("The service level is a percentage from 50 to 99.9, or empty for "
                            "the pharmacy's default.")
    minimum = None
    if raw_minimum:
        minimum = _units(raw_minimum, "The minimum order", problems)
    if problems:
        for problem in problems:
            flash(f"{medicine.name}: {problem}", "error")
        return _render_reorders(422)
    forecasting.set_reorder_settings(db.session, medicine, service_level=level,
                                     minimum_order_quantity=minimum, actor=g.user)
    db.session.commit()
    flash(f"{medicine.name}: reorder settings saved; tonight's suggestions use them.", "info")
    return redirect(url_for(".reorders"))


# --- purchase orders ----------------------------------------------------------------------------

_PO = "<int(max=2147483647):order_id>"


@bp.get("/purchase-orders")
def purchase_orders() -> Any:
    from ..services import purchase_orders as po

    everything = request.args.get("all") == "1"
    return render_template("pharmacist/purchase_orders.html", everything=everything,
                           orders=po.list_orders(db.session, _pharmacy_id(),
                                                 open_only=not everything))


def _render_purchase_order(order_id: int, values: Mapping[str, str] | None = None,
                           status: int = 200) -> Any:
    from ..services import purchase_orders as po

    order = po.get_order(db.session, order_id, pharmacy_id=_pharmacy_id())
    return render_template("pharmacist/purchase_order.html", order=order, form=ActionForm(),
                           values=values or {}), status


@bp.get(f"/purchase-orders/{_PO}")
def purchase_order(order_id: int) -> Any:
    return _render_purchase_order(order_id)


def _change_purchase_order(order_id: int, change: Callable[[Any, Mapping[str, str]], str]) -> Any:
    """Run ``change(order, form values)`` on the locked purchase order; its message is
    flashed. A refusal shows the page again with what was typed (404 stays a 404)."""
    from ..services import purchase_orders as po

    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return redirect(url_for(".purchase_order", order_id=order_id))
    try:
        order = po.get_order(db.session, order_id, pharmacy_id=_pharmacy_id(), lock=True)
        done = change(order, values)
    except DomainError as err:
        db.session.rollback()
        if err.status == 404:
            raise
        flash(err.detail, "error")
        return _render_purchase_order(order_id, values, err.status)
    db.session.commit()
    flash(done, "info")
    return redirect(url_for(".purchase_order", order_id=order_id))


@bp.post(f"/purchase-orders/{_PO}/<any(send, cancel):po_change>")
def purchase_order_action(order_id: int, po_change: str) -> Any:
    from ..services import purchase_orders as po

    def send(order: Any, values: Mapping[str, str]) -> str:
        po.mark_sent(db.session, order, actor=g.user)
        return f"{order.reference} marked as sent to {order.supplier}."

    def cancel(order: Any, values: Mapping[str, str]) -> str:
        reason = values.get("reason", "").strip()
        if len(reason) > _REASON_MAX:
            raise InvalidRequest(f"The reason is too long: at most {_REASON_MAX} characters.")
        po.cancel(db.session, order, reason=reason, actor=g.user)
        return f"{order.reference} cancelled: it no longer counts as stock on order."

    return _change_purchase_order(order_id, send if po_change == "send" else cancel)


@bp.post(f"/purchase-orders/{_PO}/lines/<int(max=2147483647):line_id>")
def purchase_order_line(order_id: int, line_id: int) -> Any:
    from ..services import purchase_orders as po

    def set_quantity(order: Any, values: Mapping[str, str]) -> str:
        problems: list[str] = []
        quantity = _units(values.get("quantity", ""), "The quantity", problems,
                          allow_zero=True)
        if problems:
            raise InvalidRequest(problems[0])
        line = po.set_line_quantity(db.session, order, line_id, quantity, actor=g.user)
        return f"Line set to {line.quantity} units." if line else "Line removed."

    return _change_purchase_order(order_id, set_quantity)
