"""Time-based one-time codes (RFC 6238, pyotp): the optional second factor of staff accounts.

A secret is stored (encrypted at rest) when enrolment starts and is in force once a code from
the user's authenticator app has confirmed it. Every accepted code records its time step, and
no code of that step or an earlier one is accepted again (no replay within the code's window).

Turning it on also makes ten single-use *recovery codes*, shown once: wherever a code is
asked for, one of them stands in for a lost phone. Using one tells the account's owner by
e-mail, with how many are left.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

import pyotp
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from ..errors import Conflict, Forbidden, InvalidRequest
from ..models import Notification, RecoveryCode, Role, User
from ..models.base import utcnow
from . import audit

ISSUER = "Dispensary"
ROLES = frozenset({Role.PHARMACIST, Role.ADMIN})
# One step either side of now: a code typed just as it changed, or a phone clock 30 s off.
_DRIFT_STEPS = 1


def may_enrol(user: User) -> bool:
    return user.role in ROLES


def is_enrolled(user: User) -> bool:
    # Judged without reading the (encrypted, deferred) seed: it is set whenever this is, and
    # a seed no key opens must not stop an administrator's reset.
    return user.totp_enabled_at is not None


def _normalise(code: str) -> str:
    return "".join(code.split())  # authenticator apps show "123 456"


#: Recovery codes made at a time, their length, and their alphabet (no 0/o, 1/l/i: they are
#: copied by hand): 16 characters of 31, about 79 bits each.
RECOVERY_CODES = 10
_RECOVERY_LENGTH = 16
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


#: Spaces of any kind and dashes (pasted text brings en dashes and no-break spaces).
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]")


def _recovery_key(code: str) -> str | None:
    """The canonical form of something typed as a recovery code ("ABCD-efgh ..." → "abcdefgh..."),
    or None when it cannot be one."""
    key = _SEPARATORS.sub("", code.lower())
    if len(key) != _RECOVERY_LENGTH or any(c not in _RECOVERY_ALPHABET for c in key):
        return None
    return key


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _tell(session: Session, user: User, kind: str, subject: str, what: str) -> None:
    """An e-mail to the account's owner about a change to their second factor."""
    session.add(Notification(
        user_id=user.id, kind=kind, subject=subject,
        body=(f"{what}\nIf this was not you, tell an administrator at once: someone has your "
              "password and a code.\n")))


def new_recovery_codes(session: Session, user: User, *, tell: bool = True) -> list[str]:
    """Ten new recovery codes for an enrolled account (every earlier one stops working), as
    they are shown once: groups of four for copying. The owner is told by e-mail (``tell``;
    not when they come with turning two-step sign-in on)."""
    if not is_enrolled(user):
        raise Conflict("Two-step sign-in is not on.")
    _drop_recovery_codes(session, user)
    codes = ["".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
             for _ in range(RECOVERY_CODES)]
    session.add_all(RecoveryCode(user_id=user.id, code_hash=_hash(c)) for c in codes)
    audit.record(session, action="user.recovery_codes_made", entity_type="user",
                 entity_id=user.id, actor=user, after={"codes": RECOVERY_CODES})
    if tell:
        _tell(session, user, "account.recovery_codes_made",
              "New recovery codes for your Dispensary account",
              "New two-step sign-in recovery codes were made for your account; the earlier "
              "ones no longer work.")
    session.flush()
    return ["-".join(c[i:i + 4] for i in range(0, _RECOVERY_LENGTH, 4)) for c in codes]


def recovery_codes_left(session: Session, user: User) -> int:
    return session.scalar(select(func.count()).select_from(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))) or 0


def _use_recovery_code(session: Session, user: User, key: str, now: datetime, *,
                       tell: bool) -> bool:
    """Spend a recovery code, audited, and (``tell``) tell its owner by e-mail how many are
    left. Spent by a conditional update, so that two requests racing with one code cannot
    both pass even where the row lock is not kept (SQLite)."""
    spent = session.execute(update(RecoveryCode).where(
        RecoveryCode.user_id == user.id, RecoveryCode.code_hash == _hash(key),
        RecoveryCode.used_at.is_(None)).values(used_at=now))
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        return False
    left = recovery_codes_left(session, user)
    audit.record(session, action="user.recovery_code_used", entity_type="user",
                 entity_id=user.id, actor=user, after={"left": left})
    if tell:
        _tell(session, user, "account.recovery_code_used",
              "A recovery code was used on your Dispensary account",
              f"One of your two-step sign-in recovery codes was used at "
              f"{now:%Y-%m-%d %H:%M} UTC. {left} of them are left; make new ones on your "
              "two-step sign-in page.")
    return True


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


def accept_code(session: Session, user: User, code: str, *, now: datetime,
                recovery: bool = True, tell: bool = True) -> bool:
    """True, and the code's time step is used up, if ``code`` is valid and not a replay; or,
    with ``recovery``, if it is one of the account's unused recovery codes (now spent, and
    its owner told by e-mail unless ``tell`` is off: the change it confirms tells them).

    The user's row is locked first, and the step or code is used up by a conditional update,
    so two requests racing with one code cannot both pass.
    """
    session.flush()  # a refresh drops unflushed changes
    session.refresh(user, with_for_update=True)
    if not user.totp_secret:
        return False
    key = _recovery_key(code) if recovery and is_enrolled(user) else None
    if key is not None:
        return _use_recovery_code(session, user, key, now, tell=tell)
    step = _matching_step(user.totp_secret, code, now)
    if step is None:
        return False
    used = session.execute(update(User).where(
        User.id == user.id, or_(User.totp_last_counter.is_(None),
                                User.totp_last_counter < step))
        .values(totp_last_counter=step).execution_options(synchronize_session=False))
    if used.rowcount != 1:  # type: ignore[attr-defined]
        return False
    set_committed_value(user, "totp_last_counter", step)
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
                      now: datetime | None = None) -> list[str]:
    """Put the pending secret in force once a code from it is right; returns the account's
    recovery codes, to be shown once.

    Every other session and API token of the account ends (they were opened without a code).
    """
    now = now or utcnow()
    if is_enrolled(user):
        raise Conflict("Two-step sign-in is already on.")
    if not user.totp_secret:
        raise Conflict("Start setting up two-step sign-in first.")
    if not accept_code(session, user, code, now=now, recovery=False):
        raise InvalidRequest("That code is not right; enter the code your app shows now.",
                             errors=[{"field": "code", "message": "Wrong or expired code."}])
    user.totp_enabled_at = now
    user.token_generation += 1
    audit.record(session, action="user.totp_enabled", entity_type="user", entity_id=user.id,
                 actor=user)
    return new_recovery_codes(session, user, tell=False)


def turn_off(session: Session, user: User) -> None:
    """Forget the secret and the recovery codes (the caller has checked a current code); the
    owner is told by e-mail."""
    _forget(session, user)
    _tell(session, user, "account.totp_disabled",
          "Two-step sign-in is off on your Dispensary account",
          "Two-step sign-in was turned off for your account: your password alone now signs "
          "in.")
    audit.record(session, action="user.totp_disabled", entity_type="user", entity_id=user.id,
                 actor=user)


def _forget(session: Session, user: User) -> None:
    """Two-step sign-in off: the secret (never read here), its last step and the recovery
    codes go."""
    _drop_recovery_codes(session, user)
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_counter = None


def _drop_recovery_codes(session: Session, user: User) -> None:
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))


def reset(session: Session, user: User, *, reason: str, operator: str) -> bool:
    """An administrator's reset for someone who lost their authenticator: two-step sign-in
    goes off, every session and API token of the account ends, and the account must enrol
    again. Returns False when it was not on. Audited with who asked and why."""
    if not reason.strip() or not operator.strip():
        raise InvalidRequest("Say who is resetting two-step sign-in, and why.")
    pending = session.scalar(select(User.id).where(User.id == user.id,
                                                   User.totp_secret.is_not(None)))
    if not is_enrolled(user) and pending is None:
        return False
    _forget(session, user)
    user.token_generation += 1
    audit.record(session, action="user.totp_reset", entity_type="user", entity_id=user.id,
                 reason=reason.strip(), after={"operator": operator.strip()[:200]})
    return True

