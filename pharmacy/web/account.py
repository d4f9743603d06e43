"""A staff member's own account: the optional second factor (codes from an authenticator app)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import segno
from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    url_for,
)
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from ..errors import DomainError
from ..extensions import db
from ..rate_limits import note_sign_in_failure
from ..services import auth, totp
from .session import login_user, logout_user, remember_device, require_role

bp = Blueprint("account", __name__, url_prefix="/account")
bp.before_request(require_role(*totp.ROLES))


class CodeForm(FlaskForm):  # type: ignore[misc]
    code = StringField("Code", validators=[DataRequired(), Length(max=16)])


class StartForm(FlaskForm):  # type: ignore[misc]
    """CSRF only."""


def _qr_svg(uri: str) -> Markup:
    # Drawn here from the URI alone (segno writes only rects and paths), so it is safe markup;
    # no image leaves the server and no script is needed.
    svg = segno.make(uri, error="m").svg_inline(scale=5, dark="#111", light="#fff",
                                                 title="QR code for your authenticator app")
    return Markup(svg)


@bp.get("/two-factor")
def two_factor() -> Any:
    user = g.user
    enrolled = totp.is_enrolled(user)
    pending = not enrolled and bool(user.totp_secret)
    uri = totp.provisioning_uri(user) if pending else None
    response = make_response(render_template(
        "account/two_factor.html", enrolled=enrolled, pending=pending,
        secret=user.totp_secret if pending else None, uri=uri,
        qr=_qr_svg(uri) if uri else None, form=CodeForm(), start_form=StartForm()))
    response.headers["Cache-Control"] = "no-store"  # the page may show the secret key
    return response


@bp.post("/two-factor/setup")
def setup() -> Any:
    if not StartForm().validate_on_submit():
        flash("The page expired; try again.", "error")
        return redirect(url_for(".two_factor")), 303
    try:
        totp.start_enrolment(db.session, g.user)
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return redirect(url_for(".two_factor")), 303
    db.session.commit()
    return redirect(url_for(".two_factor")), 303


@bp.post("/two-factor/confirm")
def confirm() -> Any:
    form = CodeForm()
    if not form.validate_on_submit():
        flash("Enter the 6-digit code from your app.", "error")
        return redirect(url_for(".two_factor")), 303
    try:
        totp.confirm_enrolment(db.session, g.user, form.code.data or "")
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return redirect(url_for(".two_factor")), 303
    db.session.commit()
    login_user(g.user)  # other sessions ended with the new token generation; keep this one
    flash("Two-step sign-in is on. You will be asked for a code each time you sign in.", "info")
    # This browser stays remembered under the new generation.
    return remember_device(redirect(url_for(".two_factor"), 303), g.user)


@bp.post("/two-factor/disable")
def disable() -> Any:
    form = CodeForm()
    if not form.validate_on_submit():
        flash("Enter the 6-digit code from your app.", "error")
        return redirect(url_for(".two_factor")), 303
    cfg = current_app.config
    try:
        result = auth.disable_second_factor(
            db.session, g.user, form.code.data or "", max_failures=cfg["LOGIN_MAX_FAILURES"],
            lockout=timedelta(seconds=cfg["LOGIN_LOCKOUT_S"]), request_id=g.get("request_id"))
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return redirect(url_for(".two_factor")), 303
    db.session.commit()
    if result.outcome is auth.SignIn.OK:
        flash("Two-step sign-in is off.", "info")
        return redirect(url_for(".two_factor")), 303
    note_sign_in_failure()
    if result.outcome is auth.SignIn.LOCKED:
        logout_user()
        flash("Too many wrong codes. Your account is locked for a while.", "error")
        return redirect(url_for("auth.login")), 303
    flash("That code is not right; two-step sign-in is still on.", "error")
    return redirect(url_for(".two_factor")), 303
