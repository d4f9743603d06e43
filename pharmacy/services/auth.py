"""Accounts: password hashing, sign-in with lockout, and signed API tokens."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import Role, User
from ..models.base import utcnow
from . import audit

_hasher = PasswordHasher()
# A real hash to verify against when the e-mail is unknown, so timing does not reveal accounts.
_DUMMY_HASH = _hasher.hash("dispensary-dummy-password")
_TOKEN_SALT = "dispensary.api-token.v1"


def hash_password(password: str) -> str:
    """Argon2id hash of ``password``."""
    return _hasher.hash(password)


def _password_matches(user_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(user_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class SignIn(enum.Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"


@dataclass(frozen=True)
class SignInResult:
    outcome: SignIn
    user: User | None = None
    locked_until: datetime | None = None


def normalise_email(email: str) -> str:
    return email.strip().lower()


def find_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(func.lower(User.email) == normalise_email(email)))


def authenticate(
    session: Session,
    email: str,
    password: str,
    *,
    max_failures: int,
    lockout: timedelta,
    request_id: str | None = None,
    now: datetime | None = None,
) -> SignInResult:
    """Check a password, counting failures; lock the account after ``max_failures`` in a row.

    The caller must commit even when sign-in fails, so that failures are counted and audited.
    """
    now = now or utcnow()
    user = find_user_by_email(session, email)
    if user is None or not user.is_active:
        _password_matches(_DUMMY_HASH, password)
        return SignInResult(SignIn.BAD_CREDENTIALS)
    if user.locked_until is not None and user.locked_until > now:
        audit.record(session, action="user.login_refused_locked", entity_type="user",
                     entity_id=user.id, request_id=request_id)
        return SignInResult(SignIn.LOCKED, user, user.locked_until)
    if not _password_matches(user.password_hash, password):
        user.failed_login_count += 1
        audit.record(session, action="user.login_failed", entity_type="user", entity_id=user.id,
                     after={"failed_login_count": user.failed_login_count},
                     request_id=request_id)
        if user.failed_login_count >= max_failures:
            user.locked_until = now + lockout
            user.failed_login_count = 0
            audit.record(session, action="user.locked", entity_type="user", entity_id=user.id,
                         after={"locked_until": user.locked_until.isoformat()},
                         request_id=request_id)
            return SignInResult(SignIn.LOCKED, user, user.locked_until)
        return SignInResult(SignIn.BAD_CREDENTIALS, user)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_login_count = 0
    user.locked_until = None
    user.last_login_at = now
    audit.record(session, action="user.login", entity_type="user", entity_id=user.id,
                 actor=user, request_id=request_id)
    return SignInResult(SignIn.OK, user)


def issue_token(secret_key: str, user: User) -> str:
    """A signed bearer token naming the user and their token generation."""
    serializer = URLSafeTimedSerializer(secret_key, salt=_TOKEN_SALT)
    return serializer.dumps({"uid": user.id, "gen": user.token_generation})


def user_for_token(
    session: Session, secret_key: str, token: str, *, max_age_s: int
) -> User | None:
    """The active user a token names, or None if it is forged, expired or revoked."""
    serializer = URLSafeTimedSerializer(secret_key, salt=_TOKEN_SALT)
    try:
        data = serializer.loads(token, max_age=max_age_s)
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("uid"), int):
        return None
    user = session.get(User, data["uid"])
    if user is None or not user.is_active or user.token_generation != data.get("gen"):
        return None
    return user


def create_user(session: Session, *, email: str, password: str, role: Role,
                full_name: str) -> User:
    user = User(email=normalise_email(email), password_hash=hash_password(password), role=role,
                full_name=full_name)
    session.add(user)
    session.flush()
    audit.record(session, action="user.created", entity_type="user", entity_id=user.id,
                 after={"role": role.value})
    return user
