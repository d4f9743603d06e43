"""Accounts over their life: staff created, passwords set, changed or reset with an e-mailed
link (everyone), staff deactivated and reactivated.

Every change that should end what the account had open (a new password, deactivation)
raises its token generation, which ends its web sessions and API tokens; every change is
audited with who did it (an operator named on the command line, or the user themself).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, time

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import Conflict, InvalidRequest, NotFound, TooManyAttempts
from ..models import Courier, Pharmacy, Role, User, Vehicle
from ..models.base import utcnow
from . import audit, auth
from .patients import MIN_PASSWORD as PATIENT_MIN_PASSWORD

MIN_PASSWORD = 12          # staff: 12 characters (patients' own minimum is 10)
STAFF_ROLES = (Role.PHARMACIST, Role.ADMIN, Role.COURIER)


def minimum_for(user: User) -> int:
    return PATIENT_MIN_PASSWORD if user.role is Role.PATIENT else MIN_PASSWORD


def check_password(password: str, *, minimum: int = MIN_PASSWORD) -> None:
    if len(password) < minimum:
        raise InvalidRequest(f"Use a password of at least {minimum} characters.",
                             errors=[{"field": "password",
                                      "message": f"At least {minimum} characters."}])
    if len(password) > 1024:
        raise InvalidRequest("That password is too long.")


def _operator(operator: str) -> str:
    operator = operator.strip()[:200]
    if not operator:
        raise InvalidRequest("Say who is making this change.")
    return operator


def create_staff(session: Session, *, email: str, full_name: str, role: Role, password: str,
                 operator: str, pharmacy_ods: str | None = None,
                 shift: tuple[time, time] | None = None,
                 vehicle_registration: str | None = None, actor: User | None = None) -> User:
    """A pharmacist, admin or courier account (a courier also gets its pharmacy, shift and,
    if given, its usual vehicle)."""
    operator = _operator(operator)
    if role not in STAFF_ROLES:
        raise InvalidRequest("Patients register themselves; create staff accounts here.")
    email = auth.normalise_email(email)
    if not auth.looks_like_email(email):
        raise InvalidRequest("Give a valid e-mail address.")
    if not full_name.strip():
        raise InvalidRequest("Give the person's full name.")
    check_password(password)
    if auth.find_user_by_email(session, email) is not None:
        raise Conflict(f"There is already an account for {email}.")
    courier: Courier | None = None
    if role is Role.COURIER:
        pharmacy = session.scalar(select(Pharmacy).where(Pharmacy.ods_code == pharmacy_ods))
        if pharmacy is None:
            raise InvalidRequest("A courier needs the ODS code of their pharmacy.")
        if shift is None or not shift[0] < shift[1]:
            raise InvalidRequest("A courier needs a shift, e.g. 09:00-17:00.")
        vehicle_id = None
        if vehicle_registration:
            vehicle = session.scalar(select(Vehicle).where(
                Vehicle.pharmacy_id == pharmacy.id,
                Vehicle.registration == vehicle_registration.strip().upper()))
            if vehicle is None:
                raise InvalidRequest(f"No vehicle {vehicle_registration} at that pharmacy.")
            vehicle_id = vehicle.id
        courier = Courier(pharmacy_id=pharmacy.id, shift_start=shift[0], shift_end=shift[1],
                          default_vehicle_id=vehicle_id)
    elif pharmacy_ods or shift or vehicle_registration:
        raise InvalidRequest("Pharmacy, shift and vehicle are for couriers.")
    user = auth.create_user(session, email=email, password=password, role=role,
                            full_name=full_name.strip())
    if courier is not None:
        courier.user_id = user.id
        session.add(courier)
        session.flush()
    audit.record(session, action="user.staff_created", entity_type="user", entity_id=user.id,
                 actor=actor, after={"role": role.value, "operator": operator})
    return user


def get_user(session: Session, email: str) -> User:
    user = auth.find_user_by_email(session, email)
    if user is None:
        raise NotFound(f"No account for {email}.")
    return user


def set_password(session: Session, user: User, password: str, *,
                 operator: str | None) -> None:
    """A new password: every session and API token of the account ends, and a lockout is
    lifted. ``operator`` None means the user changed it themself."""
    check_password(password, minimum=minimum_for(user))
    user.password_hash = auth.hash_password(password)
    user.token_generation += 1
    user.failed_login_count = 0
    user.locked_until = None
    audit.record(session, action="user.password_changed", entity_type="user",
                 entity_id=user.id, actor=user if operator is None else None,
                 after={"operator": _operator(operator)} if operator is not None else None)


class WrongSecret(InvalidRequest):
    """A wrong current password or code: counted as a failed sign-in (the caller commits
    that, and answers the error)."""


def change_own_password(session: Session, user: User, *, current: str, new: str,
                        confirm: str, code: str | None, lockout: auth.Lockout,
                        now: datetime | None = None) -> None:
    """The signed-in user's own change: the current password first, and a code from the
    authenticator app for an account with two-step sign-in. Wrong ones count as failed
    sign-ins (an open session left behind is not a free password-guessing machine)."""
    from . import totp

    now = now or utcnow()
    if user.locked_until is not None and user.locked_until > now:
        raise TooManyAttempts("Too many failed attempts; try again later.")
    if not auth.password_matches(user, current):
        auth.record_failure(session, user, lockout=lockout, now=now)
        raise WrongSecret("Your current password is not right.",
                          errors=[{"field": "current", "message": "Not right."}])
    if totp.is_enrolled(user) and not totp.accept_code(session, user, code or "", now=now):
        auth.record_failure(session, user, lockout=lockout, now=now, factor="totp")
        raise WrongSecret("The code from your authenticator app is not right.",
                          errors=[{"field": "code", "message": "Not right."}])
    if new != confirm:
        raise InvalidRequest("The new passwords do not match.",
                             errors=[{"field": "confirm", "message": "Does not match."}])
    if new == current:
        raise InvalidRequest("Choose a password you have not been using.")
    set_password(session, user, new, operator=None)


def set_active(session: Session, user: User, active: bool, *, reason: str,
               operator: str, actor: User | None = None) -> bool:
    """Deactivate (sessions and tokens end at once) or reactivate an account. Returns False
    when it already was so. An administrator cannot deactivate their own account."""
    operator = _operator(operator)
    if not reason.strip():
        raise InvalidRequest("Say why.")
    if actor is not None and actor.id == user.id and not active:
        raise Conflict("You cannot deactivate your own account; ask another administrator.")
    if user.is_active is active:
        return False
    user.is_active = active
    user.token_generation += 1
    if not active:
        from .patients import refuse_pending_links

        refuse_pending_links(session, user, reason=f"account deactivated: {reason.strip()}")
    audit.record(session, action="user.reactivated" if active else "user.deactivated",
                 entity_type="user", entity_id=user.id, reason=reason.strip()[:500],
                 actor=actor, after={"operator": operator})
    return True


def unlock(session: Session, user: User, *, reason: str, actor: User) -> bool:
    """Lift a sign-in lock (after checking with the person that the failures were theirs).
    Returns False when the account was not locked."""
    if not reason.strip():
        raise InvalidRequest("Say why.")
    if user.locked_until is None and not user.failed_login_count:
        return False
    before = {"locked_until": user.locked_until.isoformat() if user.locked_until else None,
              "failed_login_count": user.failed_login_count}
    user.locked_until = None
    user.failed_login_count = 0
    audit.record(session, action="user.unlocked", entity_type="user", entity_id=user.id,
                 actor=actor, reason=reason.strip()[:500], before=before)
    return True


def list_users(session: Session, *, query: str = "", role: Role | None = None,
               limit: int = 200) -> list[User]:
    """Accounts for the administrators' page: staff by default, anyone by e-mail or name."""
    stmt = select(User).order_by(User.role, User.email).limit(limit)
    text = query.strip().lower()
    if text:
        like = f"%{text.replace('%', '').replace('_', '')}%"
        stmt = stmt.where(func.lower(User.email).like(like) | func.lower(User.full_name)
                          .like(like))
    if role is not None:
        stmt = stmt.where(User.role == role)
    elif not text:
        stmt = stmt.where(User.role.in_(STAFF_ROLES))
    return list(session.scalars(stmt))


# --- a forgotten password --------------------------------------------------------------------

#: How long an e-mailed link to choose a new password works.
RESET_LINK_HOURS = 1
_RESET_SALT = "dispensary.password-reset"


def _reset_serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=_RESET_SALT)


def _password_fingerprint(user: User) -> str:
    # The link dies with the password it was sent for (and with every sign-out everywhere).
    material = f"{user.password_hash}:{user.token_generation}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


def reset_token(user: User, *, secret_key: str) -> str:
    """A signed, expiring token for one use: it names the account and the password it
    replaces, so it stops working once the password changes."""
    return str(_reset_serializer(secret_key).dumps({"u": user.id,
                                                    "p": _password_fingerprint(user)}))


def user_for_reset_token(session: Session, token: str, *, secret_key: str,
                         now: datetime | None = None) -> User:
    """The active account a reset link is for; InvalidRequest when it is forged, expired,
    already used or for an account that is no longer open."""
    expired = InvalidRequest("This link has expired or has already been used. Ask for a new "
                             "one from the sign-in page.")
    try:
        data, signed_at = _reset_serializer(secret_key).loads(token, return_timestamp=True)
    except BadSignature:
        raise expired from None
    if ((now or utcnow()) - signed_at).total_seconds() > RESET_LINK_HOURS * 3600:
        raise expired
    user = session.get(User, data.get("u")) if isinstance(data, dict) and isinstance(
        data.get("u"), int) else None
    if user is None or not user.is_active or not hmac.compare_digest(
            str(data.get("p", "")), _password_fingerprint(user)):
        raise expired
    return user


#: The page a reset link opens (the token follows it).
RESET_PATH = "/password/reset/"


def reset_link(base_url: str, token: str) -> str:
    """The link e-mailed: always on the site's configured address (PUBLIC_BASE_URL), never
    on a Host header someone sent."""
    return f"{base_url.rstrip('/')}{RESET_PATH}{token}"


def request_password_reset(session: Session, email: str, *, secret_key: str, base_url: str,
                           now: datetime | None = None) -> int | None:
    """Write a message with a link to choose a new password for the account with this
    address, if there is one that is open; the id of the message, or None. Run off the
    request (a job), so that the page answers alike and as fast whatever happened (no one
    learns which addresses have accounts here); at most one link goes out per account per
    quarter hour (no one floods an inbox)."""
    from . import notify

    now = now or utcnow()
    user = auth.find_user_by_email(session, email) if auth.looks_like_email(email) else None
    if user is None or not user.is_active:
        return None
    row = notify.create_notification(
        session, kind="account.password_reset", user_id=user.id,
        dedupe_key=f"password-reset:{user.id}:{notify.quarter_hour(now)}",
        link=reset_link(base_url, reset_token(user, secret_key=secret_key)),
        hours=RESET_LINK_HOURS)
    if row is None:
        return None
    audit.record(session, action="user.password_reset_requested", entity_type="user",
                 entity_id=user.id, actor=None)
    return row.id


def reset_password(session: Session, token: str, *, new: str, confirm: str, secret_key: str,
                   now: datetime | None = None) -> User:
    """Choose a new password with an e-mailed link: the link is used up, every session and
    API token of the account ends and a lockout is lifted. Two-step sign-in stays on.
    The account row is locked first and the link checked under the lock: two uses of one
    link at the same moment cannot both pass."""
    found = user_for_reset_token(session, token, secret_key=secret_key, now=now)
    session.scalar(select(User.id).where(User.id == found.id).with_for_update())
    session.refresh(found)
    user = user_for_reset_token(session, token, secret_key=secret_key, now=now)
    if new != confirm:
        raise InvalidRequest("The two new passwords differ.",
                             errors=[{"field": "confirm", "message": "Type the same password."}])
    set_password(session, user, new, operator=None)
    audit.record(session, action="user.password_reset", entity_type="user", entity_id=user.id,
                 actor=user)
    return user
