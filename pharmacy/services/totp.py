"""Time-based one-time codes (RFC 6238, pyotp): the optional second factor of staff accounts.

A secret is stored when enrolment starts and is in force once a code from the user's
authenticator app has confirmed it. Every accepted code records its time step, and no code of
that step or an earlier one is accepted again (no replay within the code's window).
"""

from __future__ import annotations

import hmac
from datetime import datetime

import pyotp
from sqlalchemy.orm import Session

from ..errors import Conflict, Forbidden, InvalidRequest
from ..models import Role, User
from ..models.base import utcnow
from . import audit

ISSUER = "Dispensary"
ROLES = frozenset({Role.PHARMACIST, Role.ADMIN})
# One step either side of now: a code typed just as it changed, or a phone clock 30 s off.
_DRIFT_STEPS = 1


def may_enrol(user: User) -> bool:
    return user.role in ROLES


def is_enrolled(user: User) -> bool:
    return user.totp_enabled_at is not None and bool(user.totp_secret)


def _normalise(code: str) -> str:
    return "".join(code.split())  # authenticator apps show "123 456"


def _matching_step(secret: str, code: str, now: datetime) -> int | None:
    code = _normalise(code)
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - _DRIFT_STEPS, current + _DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def accept_code(session: Session, user: User, code: str, *, now: datetime) -> bool:
    """True, and the code's time step is used up, if ``code`` is valid and not a replay.

    The user's row is locked first, so two requests racing with one code cannot both pass.
    """
    session.flush()  # a refresh drops unflushed changes
    session.refresh(user, with_for_update=True)
    if not user.totp_secret:
        return False
    step = _matching_step(user.totp_secret, code, now)
    if step is None or (user.totp_last_counter is not None and step <= user.totp_last_counter):
        return False
    user.totp_last_counter = step
    return True


def start_enrolment(session: Session, user: User) -> str:
    """A new secret for ``user`` (not yet in force); returns it."""
    if not may_enrol(user):
        raise Forbidden("Two-step sign-in is for pharmacists and admins.")
    if is_enrolled(user):
        raise Conflict("Two-step sign-in is already on; turn it off first.")
    user.totp_secret = pyotp.random_base32()
    user.totp_last_counter = None
    audit.record(session, action="user.totp_enrolment_started", entity_type="user",
                 entity_id=user.id, actor=user)
    return user.totp_secret


def provisioning_uri(user: User) -> str:
    """The otpauth:// URI an authenticator app reads (from the QR code or typed in)."""
    if not user.totp_secret:
        raise Conflict("Start setting up two-step sign-in first.")
    return pyotp.TOTP(user.totp_secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def confirm_enrolment(session: Session, user: User, code: str,
                      now: datetime | None = None) -> None:
    """Put the pending secret in force once a code from it is right.

    Every other session and API token of the account ends (they were opened without a code).
    """
    now = now or utcnow()
    if is_enrolled(user):
        raise Conflict("Two-step sign-in is already on.")
    if not user.totp_secret:
        raise Conflict("Start setting up two-step sign-in first.")
    if not accept_code(session, user, code, now=now):
        raise InvalidRequest("That code is not right; enter the code your app shows now.",
                             errors=[{"field": "code", "message": "Wrong or expired code."}])
    user.totp_enabled_at = now
    user.token_generation += 1
    audit.record(session, action="user.totp_enabled", entity_type="user", entity_id=user.id,
                 actor=user)


def turn_off(session: Session, user: User) -> None:
    """Forget the secret (the caller has checked a current code)."""
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_counter = None
    audit.record(session, action="user.totp_disabled", entity_type="user", entity_id=user.id,
                 actor=user)


def reset(session: Session, user: User, *, reason: str, operator: str) -> bool:
    """An administrator's reset for someone who lost their authenticator: two-step sign-in
    goes off, every session and API token of the account ends, and the account must enrol
    again. Returns False when it was not on. Audited with who asked and why."""
    if not reason.strip() or not operator.strip():
        raise InvalidRequest("Say who is resetting two-step sign-in, and why.")
    if not is_enrolled(user) and not user.totp_secret:
        return False
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_counter = None
    user.token_generation += 1
    audit.record(session, action="user.totp_reset", entity_type="user", entity_id=user.id,
                 reason=reason.strip(), after={"operator": operator.strip()[:200]})
    return True

