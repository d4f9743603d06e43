"""Sign in and out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from ..extensions import db
from ..models import Role
from ..rate_limits import account_key_for, note_sign_in_failure, unknown_account_counter
from ..services import audit, auth
from .session import (
    begin_second_factor,
    login_user,
    logout_user,
    note_device_failure,
    pending_second_factor,
    remember_device,
    trusted_device,
)

bp = Blueprint("auth", __name__)

LANDING = {
    Role.PATIENT: "patient.home",
    Role.PHARMACIST: "pharmacist.home",
    Role.COURIER: "courier.home",
    Role.ADMIN: "admin.home",
}


class LoginForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class LogoutForm(FlaskForm):  # type: ignore[misc]
    """Empty form: logging out is a POST with a CSRF token."""


def inject_user() -> dict[str, Any]:
    # formdata=None: the header's form never reads the request (which may be unreadable,
    # e.g. too large, when an error page is drawn).
    return {"current_user": g.get("user"), "logout_form": LogoutForm(formdata=None)}


def _safe_next(target: str | None) -> str | None:
    """Only same-site relative paths; never an open redirect."""
    if not target:
        return None
    parts = urlsplit(target)
    if (parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//")
            or "\\" in target):
        return None
    return target


@bp.get("/")
def index() -> Any:
    user = g.get("user")
    if user is None:
        return redirect(url_for("auth.login"))
    endpoint = LANDING.get(user.role)
    if endpoint is None:
        return render_template("no_pages.html"), 200
    return redirect(url_for(endpoint))


def _lockout() -> dict[str, Any]:
    cfg = current_app.config
    return {"max_failures": cfg["LOGIN_MAX_FAILURES"],
            "lockout": timedelta(seconds=cfg["LOGIN_LOCKOUT_S"])}


_LOCKED_MESSAGE = ("Too many failed attempts. Your account is locked for a while; "
                   "try again later.")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        email = form.email.data or ""
        result = auth.authenticate(db.session, email, form.password.data or "", **_lockout(),
                                   request_id=g.get("request_id"),
                                   trusted_device=trusted_device(),
                                   count_unknown=unknown_account_counter(email))
        db.session.commit()
        if result.outcome in (auth.SignIn.BAD_CREDENTIALS, auth.SignIn.LOCKED):
            note_device_failure()
        target = _safe_next(request.args.get("next"))
        if result.outcome is auth.SignIn.OK and result.user is not None:
            login_user(result.user)
            flash("Signed in.", "info")
            return remember_device(redirect(target or url_for("auth.index")), result.user)
        if result.outcome is auth.SignIn.SECOND_FACTOR_REQUIRED and result.user is not None:
            begin_second_factor(result.user, account_key=account_key_for(email),
                                next_url=target)
            return redirect(url_for("auth.second_factor"))
        note_sign_in_failure()
        if result.outcome is auth.SignIn.LOCKED:
            flash(_LOCKED_MESSAGE, "error")
            status = 429
        else:
            flash("Wrong e-mail or password.", "error")
            status = 401
    elif request.method == "POST":
        status = 400
    return render_template("login.html", form=form), status


class CodeForm(FlaskForm):  # type: ignore[misc]
    code = StringField("Code", validators=[DataRequired(), Length(max=40)])


@bp.route("/login/code", methods=["GET", "POST"])
def second_factor() -> Any:
    """The second step of signing in: the code from the authenticator app.

    Reachable only while a sign-in waits for its code (the password was accepted in the last
    few minutes); nobody is signed in until the code is right.
    """
    pending = pending_second_factor()
    if pending is None:
        flash("Sign in with your e-mail and password first.", "error")
        return redirect(url_for("auth.login"))
    form = CodeForm()
    status = 200
    if form.validate_on_submit():
        result = auth.complete_second_factor(
            db.session, pending["uid"], form.code.data or "", generation=pending.get("gen", -1),
            **_lockout(), request_id=g.get("request_id"), trusted_device=trusted_device())
        db.session.commit()
        if result.outcome in (auth.SignIn.BAD_SECOND_FACTOR, auth.SignIn.LOCKED):
            note_device_failure()
        if result.outcome is auth.SignIn.OK and result.user is not None:
            login_user(result.user)  # a fresh session: the waiting state is gone
            flash("Signed in.", "info")
            return remember_device(
                redirect(_safe_next(pending.get("next")) or url_for("auth.index")), result.user)
        note_sign_in_failure()
        if result.outcome is auth.SignIn.LOCKED:
            logout_user()
            flash(_LOCKED_MESSAGE, "error")
            return render_template("login.html", form=LoginForm(formdata=None)), 429
        if result.outcome is auth.SignIn.BAD_CREDENTIALS:
            logout_user()
            flash("Sign in again.", "error")
            return redirect(url_for("auth.login"))
        flash("That code is not right. Enter the code your app shows now.", "error")
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("login_code.html", form=form), status


class PasswordForm(FlaskForm):  # type: ignore[misc]
    current = PasswordField("Current password", validators=[Length(max=1024)])
    new = PasswordField("New password", validators=[Length(max=1024)])
    confirm = PasswordField("New password again", validators=[Length(max=1024)])
    code = StringField("Code", validators=[Length(max=40)])


@bp.route("/password", methods=["GET", "POST"])
def change_password() -> Any:
    """A signed-in user's own password; every other session and API token of theirs ends."""
    from ..errors import DomainError
    from ..services import accounts, totp

    user = g.get("user")
    if user is None:
        return redirect(url_for("auth.login", next="/password"))
    form = PasswordForm()
    minimum = accounts.minimum_for(user)
    status = 200
    if form.validate_on_submit():
        lockout = _lockout()
        try:
            accounts.change_own_password(
                db.session, user, current=form.current.data or "", new=form.new.data or "",
                confirm=form.confirm.data or "", code=form.code.data,
                lockout=auth.Lockout(lockout["max_failures"], lockout["lockout"]))
        except accounts.WrongSecret as err:
            db.session.commit()  # the failure is counted and audited
            note_sign_in_failure()
            flash(err.detail, "error")
            status = err.status
        except DomainError as err:
            db.session.rollback()
            flash(err.detail, "error")
            status = err.status
        else:
            db.session.commit()
            login_user(user)  # this session carries the new generation; the others end
            flash("Password changed. You are signed out everywhere else.", "info")
            return remember_device(redirect(url_for("auth.index")), user)
    elif request.method == "POST":
        flash("The form expired; please try again.", "error")
        status = 400
    return render_template("change_password.html", form=form, minimum=minimum,
                           needs_code=totp.is_enrolled(user)), status


class ForgotForm(FlaskForm):  # type: ignore[misc]
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])


class ResetForm(FlaskForm):  # type: ignore[misc]
    new = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField("New password again", validators=[DataRequired(), Length(max=1024)])


@bp.route("/password/forgot", methods=["GET", "POST"])
def forgot_password() -> Any:
    """Ask for a link to choose a new password. The answer is the same whether or not the
    address has an account here."""
    from ..services import accounts

    form = ForgotForm()
    if form.validate_on_submit():
        # The same work whatever the address: the account is looked up by a job.
        _mail_by_job("password-reset", "send_password_reset", form.email.data or "")
        flash("If an account uses that address, we have e-mailed it a link to choose a new "
              f"password. The link works for {accounts.RESET_LINK_HOURS} hour; check your "
              "spam folder if it does not arrive within a few minutes.", "info")
        return redirect(url_for("auth.login"))
    status = 400 if request.method == "POST" else 200
    if status == 400:
        flash("Give the e-mail address you sign in with.", "error")
    return render_template("forgot_password.html", form=form), status


_RESET_TOKEN = "password_reset_token"


@bp.get("/password/reset/<token>")
def open_reset_link(token: str) -> Any:
    """An e-mailed link: its token moves into this browser's session and the browser goes
    on to a page whose address holds no token, so the page's own requests carry none in a
    Referer (as Django does). The link keeps working until it is used or expires: a mail
    scanner that opens it first does not spoil it."""
    from ..errors import DomainError
    from ..services import accounts

    token = token[:512]
    try:
        accounts.user_for_reset_token(db.session, token,
                                      secret_key=current_app.config["SECRET_KEY"])
    except DomainError as err:
        flash(err.detail, "error")
        return redirect(url_for("auth.forgot_password"))
    session[_RESET_TOKEN] = token
    return redirect(url_for("auth.reset_password"))


@bp.route("/password/reset", methods=["GET", "POST"])
def reset_password() -> Any:
    """Choose a new password after opening an e-mailed link (used once; it expires)."""
    from ..errors import DomainError
    from ..services import accounts

    secret = current_app.config["SECRET_KEY"]
    token = session.get(_RESET_TOKEN, "")
    form = ResetForm()
    try:
        user = accounts.user_for_reset_token(db.session, token, secret_key=secret)
    except DomainError as err:
        session.pop(_RESET_TOKEN, None)
        flash(err.detail, "error")
        return redirect(url_for("auth.forgot_password"))
    if form.validate_on_submit():
        try:
            accounts.reset_password(db.session, token, new=form.new.data or "",
                                    confirm=form.confirm.data or "", secret_key=secret)
        except DomainError as err:
            db.session.rollback()
            flash(err.detail, "error")
            return render_template("reset_password.html", form=form,
                                   minimum=accounts.minimum_for(user)), err.status
        db.session.commit()
        logout_user()
        session.pop(_RESET_TOKEN, None)
        flash("Password changed. Sign in with it now; you are signed out everywhere else.",
              "info")
        return redirect(url_for("auth.login"))
    status = 200
    if request.method == "POST":
        flash("The form expired; please try again.", "error")
        status = 400
    return render_template("reset_password.html", form=form,
                           minimum=accounts.minimum_for(user)), status


@bp.post("/logout")
def logout() -> Any:
    form = LogoutForm()
    if form.validate_on_submit():
        user = g.get("user")
        logout_user()
        if user is not None:
            audit.record(db.session, action="user.logout", entity_type="user",
                         entity_id=user.id, actor=user)
            db.session.commit()
        flash("Signed out.", "info")
    return redirect(url_for("auth.login"))


def _mail_by_job(key: str, job: str, arg: str | int) -> None:
    """Leave a job (``pharmacy.jobs.accounts.<job>``) in the outbox to write and send a
    message, commit, and relay it at once."""
    import uuid

    from ..jobs.outbox import relay_now
    from ..services import outbox

    outbox.add(db.session, key=f"{key}:{uuid.uuid4()}",
               function=f"pharmacy.jobs.accounts.{job}",
               args=[arg[:254] if isinstance(arg, str) else arg], job_timeout_s=60)
    db.session.commit()
    relay_now()


class ConfirmForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


_REGISTRATION_TOKEN = "registration_token"


@bp.get("/register/confirm/<token>")
def open_confirm_link(token: str) -> Any:
    """The link e-mailed after registering: its token moves into this browser's session and
    the browser goes on to a page, with no token in its address, that asks for the password
    chosen at registration (a mail scanner opening the link opens no account)."""
    from ..errors import DomainError
    from ..services import patients

    try:
        patients.pending_for_token(db.session, token)
    except DomainError as err:
        return render_template("error.html", status=400, title="This link does not work",
                               detail=err.detail), 400
    session[_REGISTRATION_TOKEN] = token[:512]
    return redirect(url_for("auth.confirm_registration"))


@bp.route("/register/confirm", methods=["GET", "POST"])
def confirm_registration() -> Any:
    """Give the password chosen at registration: the account opens and you are signed in."""
    from ..errors import DomainError
    from ..services import patients

    token = session.get(_REGISTRATION_TOKEN, "")
    form = ConfirmForm()
    try:
        patients.pending_for_token(db.session, token)
    except DomainError as err:
        session.pop(_REGISTRATION_TOKEN, None)
        return render_template("error.html", status=400, title="This link does not work",
                               detail=err.detail), 400
    status = 200
    if form.validate_on_submit():
        try:
            user = patients.confirm_registration(db.session, token, form.password.data or "")
        except patients.WrongPassword as wrong:
            db.session.commit()  # the try is counted
            note_sign_in_failure()
            flash(wrong.detail, "error")
            if wrong.closed:
                session.pop(_REGISTRATION_TOKEN, None)
                return render_template("error.html", status=400,
                                       title="This link does not work",
                                       detail=wrong.detail), 400
            return render_template("confirm_registration.html", form=form), wrong.status
        except DomainError as err:
            db.session.rollback()
            note_sign_in_failure()
            flash(err.detail, "error")
            return render_template("confirm_registration.html", form=form), err.status
        db.session.commit()
        session.pop(_REGISTRATION_TOKEN, None)
        if user is None:
            flash("This address already has an account: sign in.", "info")
            return redirect(url_for("auth.login"))
        login_user(user)
        if user.patient is None:  # an NHS number was given: a pharmacist checks it first
            flash("Welcome! Because you gave an NHS number, a pharmacist will check it is you "
                  "(they may call you) before your account opens. We will e-mail you when "
                  "it is done.", "info")
            return redirect(url_for("patient.home"))
        flash("Welcome! Add a delivery address to start ordering.", "info")
        return redirect(url_for("patient.profile"))
    if request.method == "POST":
        flash("The form expired; please try again.", "error")
        status = 400
    return render_template("confirm_registration.html", form=form), status


class RegisterForm(FlaskForm):  # type: ignore[misc]
    """CSRF only; the fields are read and checked by the patients service."""


@bp.route("/register", methods=["GET", "POST"])
def register() -> Any:
    from datetime import date

    from ..errors import DomainError
    from ..models.base import utcnow
    from ..services import patients

    form = RegisterForm()
    status = 200
    if request.method == "POST":
        if not form.validate_on_submit():
            flash("The form expired; please try again.", "error")
            return render_template("register.html", form=form, values=request.form), 400
        values = request.form
        try:
            dob = date.fromisoformat(values.get("date_of_birth", ""))
        except ValueError:
            dob = date(1, 1, 1)  # refused by the service with a clear message
        try:
            pending = patients.register(db.session, patients.Registration(
                email=values.get("email", "")[:254], password=values.get("password", "")[:1024],
                given_name=values.get("given_name", "")[:100],
                family_name=values.get("family_name", "")[:100], date_of_birth=dob,
                nhs_number=values.get("nhs_number", "")[:20] or None,
                accepted_terms=values.get("terms") == "yes",
                accepted_privacy=values.get("privacy") == "yes"), today=utcnow().date())
        except DomainError as err:
            db.session.rollback()
            flash(err.detail, "error")
            for e in err.errors:
                flash(e["message"], "error")
            return render_template("register.html", form=form, values=values), err.status
        # New or already known, the same answer after the same work, and a message to the
        # address either way (a job writes it): no one learns here who has an account.
        _mail_by_job("registration-mail", "send_registration_mail", pending.id)
        return render_template("check_inbox.html",
                               nhs_number=bool(values.get("nhs_number", "").strip())), 200
    return render_template("register.html", form=form, values={}), status
