"""A staff member's own account: the optional second factor (codes from an authenticator app)."""

from __future__ import annotations

from collections.abc import Callable
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
    # A 6-digit code, or a recovery code ("abcd-efgh-jkmn-pqrs") where one is accepted.
    code = StringField("Code", validators=[DataRequired(), Length(max=40)])


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
        qr=_qr_svg(uri) if uri else None, form=CodeForm(), start_form=StartForm(),
        codes_left=totp.recovery_codes_left(db.session, user) if enrolled else None,
        codes_total=totp.RECOVERY_CODES))
    response.headers["Cache-Control"] = "no-store"  # the page may show the secret key
    return response


def _show_recovery_codes(codes: list[str]) -> Any:
    """The recovery codes, shown this once (never stored in the clear, never cached)."""
    response = make_response(render_template("account/recovery_codes.html", codes=codes))
    response.headers["Cache-Control"] = "no-store"
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
        codes = totp.confirm_enrolment(db.session, g.user, form.code.data or "")
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return redirect(url_for(".two_factor")), 303
    db.session.commit()
    login_user(g.user)  # other sessions ended with the new token generation; keep this one
    flash("Two-step sign-in is on. You will be asked for a code each time you sign in.", "info")
    # This browser stays remembered under the new generation.
    return remember_device(_show_recovery_codes(codes), g.user)


def _checked_code(change: Callable[[], object]) -> tuple[auth.SignInResult | None, object]:
    """The form's current code (from the app, or a recovery code) is checked again before a
    change to the second factor; a wrong one counts as a failed sign-in. When it is right,
    ``change`` is made. Committed either way; (None, None) when the form or the change was
    refused (the reason is flashed)."""
    form = CodeForm()
    if not form.validate_on_submit():
        flash("Enter the 6-digit code from your app.", "error")
        return None, None
    cfg = current_app.config
    try:
        result = auth.check_second_factor(
            db.session, g.user, form.code.data or "", max_failures=cfg["LOGIN_MAX_FAILURES"],
            lockout=timedelta(seconds=cfg["LOGIN_LOCKOUT_S"]), request_id=g.get("request_id"))
        made = change() if result.outcome is auth.SignIn.OK else None
    except DomainError as err:
        db.session.rollback()
        flash(err.detail, "error")
        return None, None
    db.session.commit()
    return result, made


@bp.post("/two-factor/recovery-codes")
def recovery_codes() -> Any:
    """New recovery codes in place of every earlier one."""
    result, codes = _checked_code(lambda: totp.new_recovery_codes(db.session, g.user))
    if result is None:
        return redirect(url_for(".two_factor")), 303
    if isinstance(codes, list):
        return _show_recovery_codes(codes)
    return _wrong_code(result, still="no new recovery codes were made")


@bp.post("/two-factor/disable")
def disable() -> Any:
    result, _ = _checked_code(lambda: totp.turn_off(db.session, g.user))
    if result is None:
        return redirect(url_for(".two_factor")), 303
    if result.outcome is auth.SignIn.OK:
        flash("Two-step sign-in is off.", "info")
        return redirect(url_for(".two_factor")), 303
    return _wrong_code(result, still="two-step sign-in is still on")


def _wrong_code(result: auth.SignInResult, *, still: str) -> Any:
    note_sign_in_failure()
    if result.outcome is auth.SignIn.LOCKED:
        logout_user()
        flash("Too many wrong codes. Your account is locked for a while.", "error")
        return redirect(url_for("auth.login")), 303
    flash(f"That code is not right; {still}.", "error")
    return redirect(url_for(".two_factor")), 303
