"""Pages for administrators."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Blueprint, render_template, request, url_for

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
    kept = {k: v for k, v in request.args.items() if k != "page" and v}

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
