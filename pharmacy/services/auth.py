"""Accounts: password hashing, sign-in with lockout, and signed API tokens."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import Conflict
from ..models import Role, User
from ..models.base import utcnow
from . import audit, totp

_hasher = PasswordHasher()
# A real hash to verify against when the e-mail is unknown, so timing does not reveal accounts.
_DUMMY_HASH = _hasher.hash("dispensary-dummy-password")
_TOKEN_SALT = "dispensary.api-token.v1"


def hash_password(password: str) -> str:
    """Argon2id hash of ``password``."""
    return _hasher.hash(password)


def password_matches(user: User, password: str) -> bool:
    """Whether ``password`` is the user's (to confirm a change they ask for)."""
    return _password_matches(user.password_hash, password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Whether ``password`` matches a stored hash (a registration waiting to be confirmed)."""
    return _password_matches(stored_hash, password)


def _password_matches(user_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(user_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class SignIn(enum.Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"
    # The password was right; the account also wants a code from its authenticator app.
    SECOND_FACTOR_REQUIRED = "second_factor_required"
    BAD_SECOND_FACTOR = "bad_second_factor"


@dataclass(frozen=True)
class SignInResult:
    outcome: SignIn
    user: User | None = None
    locked_until: datetime | None = None


@dataclass(frozen=True)
class Lockout:
    """How many failures in a row lock an account, and for how long."""

    max_failures: int
    duration: timedelta


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def looks_like_email(email: str) -> bool:
    """One @, a dotted domain, no spaces or line breaks (the address is checked for real by
    the mail it receives)."""
    email = normalise_email(email)
    return bool(_EMAIL.fullmatch(email)) and len(email) <= 254


def normalise_email(email: str) -> str:
    return email.strip().lower()


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.email) == normalise_email(email)))


def _is_locked(user: User, now: datetime) -> bool:
    return user.locked_until is not None and user.locked_until > now


def _refuse_locked(session: Session, user: User, request_id: str | None) -> SignInResult:
    audit.record(session, action="user.login_refused_locked", entity_type="user",
                 entity_id=user.id, request_id=request_id)
    return SignInResult(SignIn.LOCKED, user, user.locked_until)


def record_failure(session: Session, user: User, *, lockout: Lockout, now: datetime,
                   factor: str = "password", request_id: str | None = None) -> SignInResult:
    """Count one failed attempt (a wrong password or code); lock the account at the limit."""
    user.failed_login_count += 1
    audit.record(session, action="user.login_failed", entity_type="user", entity_id=user.id,
                 after={"failed_login_count": user.failed_login_count, "factor": factor},
                 request_id=request_id)
    if user.failed_login_count >= lockout.max_failures:
        user.locked_until = now + lockout.duration
        user.failed_login_count = 0
        audit.record(session, action="user.locked", entity_type="user", entity_id=user.id,
                     after={"locked_until": user.locked_until.isoformat()},
                     request_id=request_id)
        return SignInResult(SignIn.LOCKED, user, user.locked_until)
    return SignInResult(
        SignIn.BAD_CREDENTIALS if factor == "password" else SignIn.BAD_SECOND_FACTOR, user)


def _signed_in(session: Session, user: User, *, now: datetime, second_factor: bool,
               request_id: str | None) -> SignInResult:
    user.failed_login_count = 0
    user.locked_until = None
    user.last_login_at = now
    audit.record(session, action="user.login", entity_type="user", entity_id=user.id,
                 actor=user, after={"second_factor": True} if second_factor else None,
                 request_id=request_id)
    return SignInResult(SignIn.OK, user)


def _check_code(session: Session, user: User, code: str, *, lockout: Lockout, now: datetime,
                request_id: str | None) -> SignInResult:
    if totp.accept_code(session, user, code, now=now):
        return _signed_in(session, user, now=now, second_factor=True, request_id=request_id)
    return record_failure(session, user, lockout=lockout, now=now, factor="totp",
                          request_id=request_id)


def authenticate(
    session: Session,
    email: str,
    password: str,
    *,
    max_failures: int,
    lockout: timedelta,
    totp_code: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
    trusted_device: tuple[int, int] | None = None,
    count_unknown: Callable[[], int] | None = None,
) -> SignInResult:
    """Check a password (and, for an account with a second factor, a code), counting failures;
    lock the account after ``max_failures`` in a row.

    An enrolled account without ``totp_code`` answers SECOND_FACTOR_REQUIRED: the password was
    right, but nobody is signed in until ``complete_second_factor`` (or a call with the code)
    accepts a code. A wrong code counts as a failed sign-in.

    The caller must commit even when sign-in fails, so that failures are counted and audited.

    A lock keeps out whoever guesses, but not the owner on a browser they signed in from
    before (``trusted_device``: the user id and token generation its signed device cookie
    was issued for; a new password voids it): otherwise anyone could keep any account
    locked by typing wrong passwords for it. An unknown or inactive
    e-mail is answered like a real account, locked after as many failures
    (``count_unknown`` counts them), so the lock does not reveal which accounts exist.
    """
    now = now or utcnow()
    policy = Lockout(max_failures, lockout)
    user = find_user_by_email(session, email)
    if user is None or not user.is_active:
        _password_matches(_DUMMY_HASH, password)
        if count_unknown is not None and count_unknown() >= max_failures:
            return SignInResult(SignIn.LOCKED)
        return SignInResult(SignIn.BAD_CREDENTIALS)
    if _is_locked(user, now) and not trusted(user, trusted_device):
        _password_matches(_DUMMY_HASH, password)  # the same work as an answered attempt
        return _refuse_locked(session, user, request_id)
    if not _password_matches(user.password_hash, password):
        return record_failure(session, user, lockout=policy, now=now, request_id=request_id)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    if totp.is_enrolled(user):
        if totp_code is None:
            audit.record(session, action="user.login_second_factor_required",
                         entity_type="user", entity_id=user.id, request_id=request_id)
            return SignInResult(SignIn.SECOND_FACTOR_REQUIRED, user)
        return _check_code(session, user, totp_code, lockout=policy, now=now,
                           request_id=request_id)
    return _signed_in(session, user, now=now, second_factor=False, request_id=request_id)


def trusted(user: User, device: tuple[int, int] | None) -> bool:
    """Whether a device cookie's (user id, token generation) is this account's as it is."""
    return device is not None and device == (user.id, user.token_generation)


def complete_second_factor(
    session: Session,
    user_id: int,
    code: str,
    *,
    generation: int,
    max_failures: int,
    lockout: timedelta,
    request_id: str | None = None,
    now: datetime | None = None,
    trusted_device: tuple[int, int] | None = None,
) -> SignInResult:
    """The second step of a sign-in whose password ``authenticate`` accepted.

    ``generation`` is the account's token generation at the first step: a password change or
    forced sign-out in between voids the waiting sign-in.
    """
    now = now or utcnow()
    user = session.get(User, user_id)
    if (user is None or not user.is_active or not totp.is_enrolled(user)
            or user.token_generation != generation):
        return SignInResult(SignIn.BAD_CREDENTIALS)
    if _is_locked(user, now) and not trusted(user, trusted_device):
        return _refuse_locked(session, user, request_id)
    return _check_code(session, user, code, lockout=Lockout(max_failures, lockout), now=now,
                       request_id=request_id)


def check_second_factor(session: Session, user: User, code: str, *, max_failures: int,
                        lockout: timedelta, request_id: str | None = None,
                        now: datetime | None = None) -> SignInResult:
    """A signed-in user proves the second factor again (a current code, or a recovery code)
    before changing it; a wrong code is a failed sign-in."""
    now = now or utcnow()
    if not totp.is_enrolled(user):
        raise Conflict("Two-step sign-in is not on.")
    if _is_locked(user, now):
        return SignInResult(SignIn.LOCKED, user, user.locked_until)
    # No e-mail for a recovery code spent here: the change it confirms sends its own.
    if not totp.accept_code(session, user, code, now=now, tell=False):
        return record_failure(session, user, lockout=Lockout(max_failures, lockout), now=now,
                              factor="totp", request_id=request_id)
    return SignInResult(SignIn.OK, user)


def issue_token(secret_key: str, user: User) -> str:
    """A signed bearer token naming the user and their token generation."""
    serializer = URLSafeTimedSerializer(secret_key, salt=_TOKEN_SALT)
    return serializer.dumps({"uid": user.id, "gen": user.token_generation})


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    generation: object
    expires_at: float = 0.0  # epoch seconds


def token_claims(secret_key: str, token: str, *, max_age_s: int) -> TokenClaims | None:
    """The user and token generation a token names; None if forged or expired.

    Whether the user is still active and the generation still current is for the caller
    to check (services/principals.py, against a Redis copy of the user row).
    """
    serializer = URLSafeTimedSerializer(secret_key, salt=_TOKEN_SALT)
    try:
        data, signed_at = serializer.loads(token, max_age=max_age_s, return_timestamp=True)
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("uid"), int):
        return None
    return TokenClaims(data["uid"], data.get("gen"), signed_at.timestamp() + max_age_s)


def create_user(session: Session, *, email: str, password: str, role: Role,
                full_name: str, password_hash: str | None = None) -> User:
    """A new account; ``password_hash`` when the password was hashed before (a registration
    confirmed later), else ``password`` is hashed here."""
    user = User(email=normalise_email(email),
                password_hash=password_hash or hash_password(password), role=role,
                full_name=full_name)
    session.add(user)
    session.flush()
    audit.record(session, action="user.created", entity_type="user", entity_id=user.id,
                 after={"role": role.value})
    return user
