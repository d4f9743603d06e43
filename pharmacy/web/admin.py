"""Pages for administrators."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from ..errors import DomainError, InvalidRequest
from ..extensions import db
from ..models import Role
from ..services import audit_log, dashboards
from .forms import ActionForm, whole_number
from .session import require_role

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.before_request(require_role(Role.ADMIN))


@bp.get("/")
def home() -> Any:
    return render_template("admin/home.html", summary=dashboards.admin_summary(db.session))


def _date(name: str, errors: list[str]) -> date | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        errors.append(f"'{raw}' is not a date (use YYYY-MM-DD).")
        return None


def _page() -> int:
    page = whole_number(request.args.get("page", "1"))
    return min(max(page, 1), 100_000) if page is not None else 1


@bp.get("/audit")
def audit() -> Any:
    errors: list[str] = []
    filters = audit_log.AuditFilter(
        entity_type=request.args.get("entity_type", "").strip()[:32] or None,
        entity_id=request.args.get("entity_id", "").strip()[:64] or None,
        action=request.args.get("action", "").strip()[:64] or None,
        actor_email=request.args.get("actor", "").strip()[:254] or None,
        since=_date("since", errors), until=_date("until", errors),
    )
    result = audit_log.search(db.session, filters, page=_page())
    kept: dict[str, Any] = {k: v for k, v in request.args.items() if k != "page" and v}

    def page_url(n: int) -> str:
        return url_for(".audit", **kept, page=n)

    return render_template("admin/audit.html", result=result, filters=filters, errors=errors,
                           entity_types=audit_log.entity_types(db.session),
                           args=request.args, page_url=page_url), (400 if errors else 200)


@bp.get("/jobs")
def jobs() -> Any:
    """Queues, workers and failed jobs (RQ), and outbox messages still waiting."""
    from ..services import job_admin

    return render_template("admin/jobs.html", state=job_admin.overview(db.session),
                           form=ActionForm())


@bp.post("/jobs/<job_id>/requeue")
def requeue(job_id: str) -> Any:
    from flask import flash, redirect

    from ..services import job_admin

    if ActionForm().validate_on_submit():
        if job_admin.requeue_failed(job_id):
            flash(f"Job {job_id} queued again.", "info")
        else:
            flash(f"Job {job_id} is not a failed job any more.", "error")
    return redirect(url_for(".jobs"))


# --- accounts ------------------------------------------------------------------------------

def _operator() -> str:
    user = g.user
    return f"{user.full_name} <{user.email}>"


@bp.get("/users")
def users() -> Any:
    from ..services import accounts

    role_name = request.args.get("role", "")
    role = Role(role_name) if role_name in {r.value for r in Role} else None
    query = request.args.get("q", "")[:254]
    return render_template("admin/users.html", form=ActionForm(), values={},
                           users=accounts.list_users(db.session, query=query, role=role),
                           query=query, role=role_name, roles=[r.value for r in Role])


@bp.post("/users")
def create_user() -> Any:
    from datetime import time

    from ..services import accounts

    values = {k: v for k, v in request.form.items() if k not in ("csrf_token", "password")}
    status = 400
    if ActionForm().validate_on_submit():
        try:
            shift = None
            if values.get("shift_start") or values.get("shift_end"):
                try:
                    shift = (time.fromisoformat(values.get("shift_start", "")),
                             time.fromisoformat(values.get("shift_end", "")))
                except ValueError:
                    raise InvalidRequest("Give the shift as two times, e.g. 09:00 and "
                                         "17:00.") from None
            role_name = values.get("role", "")
            if role_name not in {r.value for r in accounts.STAFF_ROLES}:
                raise InvalidRequest("Choose pharmacist, admin or courier.")
            user = accounts.create_staff(
                db.session, email=values.get("email", "")[:254],
                full_name=values.get("full_name", "")[:200], role=Role(role_name),
                password=request.form.get("password", "")[:1025], operator=_operator(),
                pharmacy_ods=values.get("pharmacy_ods", "").strip() or None, shift=shift,
                vehicle_registration=values.get("vehicle", "").strip() or None, actor=g.user)
        except DomainError as err:
            db.session.rollback()
            flash(err.detail, "error")
            status = err.status
        else:
            db.session.commit()
            flash(f"Created {user.role.value} {user.email}. Give them the password in person; "
                  "they can change it at /password.", "info")
            return redirect(url_for(".user", user_id=user.id))
    else:
        flash("The form expired; please try again.", "error")
    return render_template("admin/users.html", form=ActionForm(), values=values,
                           users=accounts.list_users(db.session), query="", role="",
                           roles=[r.value for r in Role]), status


def _render_user(user_id: int, status: int = 200) -> Any:
    from ..errors import NotFound
    from ..models import User
    from ..services import totp

    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such account.")
    enrolled = totp.is_enrolled(user)
    return render_template("admin/user.html", user=user, form=ActionForm(),
                           two_factor=enrolled,
                           codes_left=totp.recovery_codes_left(db.session, user)
                           if enrolled else None), status


@bp.get("/users/<int(max=2147483647):user_id>")
def user(user_id: int) -> Any:
    return _render_user(user_id)


@bp.post("/users/<int(max=2147483647):user_id>/"
         "<any(deactivate, reactivate, unlock, 'reset-two-factor'):account_change>")
def change_user(user_id: int, account_change: str) -> Any:
    change = account_change
    from ..errors import NotFound
    from ..models import User
    from ..services import accounts, totp

    target = db.session.get(User, user_id)
    if target is None:
        raise NotFound("No such account.")
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return _render_user(user_id, 400)
    reason = request.form.get("reason", "")[:500]
    try:
        if change in ("deactivate", "reactivate"):
            done = accounts.set_active(db.session, target, change == "reactivate",
                                       reason=reason, operator=_operator(), actor=g.user)
        elif change == "unlock":
            done = accounts.unlock(db.session, target, reason=reason, actor=g.user)
        else:
            done = totp.reset(db.session, target, reason=reason, operator=_operator())
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return _render_user(user_id, err.status)
    db.session.commit()
    flash({"deactivate": "Deactivated: their sessions and tokens have ended.",
           "reactivate": "Reactivated: they can sign in again.",
           "unlock": "Unlocked.",
           "reset-two-factor": "Two-step sign-in turned off; they must set it up again."}[change]
          if done else "Nothing to change.", "info")
    return redirect(url_for(".user", user_id=user_id))
