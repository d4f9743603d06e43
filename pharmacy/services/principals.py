"""What a bearer-token check needs from a user row, kept in Redis between requests.

Every API call checks its token against the user's role, active flag and token generation
(a sign-out or a password change raises the generation, which revokes the user's tokens).
Reading those from PostgreSQL on every call costs a transaction; this module keeps a copy
per user in Redis, so read-only calls need no database at all.

Freshness: a committed change to a user row *writes* the new values over the copy
(``principals_changed`` collects them at flush, ``publish`` runs after commit); a copy
filled from the database never overwrites one (``SET NX``), so a reader that loaded the row
just before a change cannot put the old values back. A change made outside the application
(plain SQL) is seen when the copy expires (``TTL_S``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from ..models import Role, User
from .auth import TokenClaims, token_claims

__all__ = ["KEY", "TTL_S", "Principal", "TokenClaims", "principal_for", "principals_changed",
           "publish", "token_claims"]

KEY = "dispensary:principal:{}"
TTL_S = 300


@dataclass(frozen=True)
class Principal:
    user_id: int
    role: Role
    is_active: bool
    token_generation: int

    @classmethod
    def of(cls, user: User) -> Principal:
        return cls(user.id, user.role, bool(user.is_active), int(user.token_generation))

    def encode(self) -> str:
        return f"{self.role.value}|{int(self.is_active)}|{self.token_generation}"

    @classmethod
    def decode(cls, user_id: int, raw: bytes) -> Principal | None:
        try:
            role, active, generation = raw.decode().split("|")
            return cls(user_id, Role(role), active == "1", int(generation))
        except (ValueError, UnicodeDecodeError):
            return None

    def accepts(self, generation: object) -> bool:
        return self.is_active and self.token_generation == generation


def principal_for(session: Session, redis: Redis | None, user_id: int, *,
                  on_redis_error: Callable[[], None] = lambda: None) -> Principal | None:
    """The user's principal from Redis, else from the database (then copied to Redis)."""
    if redis is not None:
        try:
            raw = redis.get(KEY.format(user_id))
        except RedisError:
            on_redis_error()
            redis = None
        else:
            principal = Principal.decode(user_id, raw) if isinstance(raw, bytes) else None
            if principal is not None:
                return principal
    user = session.get(User, user_id)
    if user is None:
        return None
    principal = Principal.of(user)
    if redis is not None:
        try:
            redis.set(KEY.format(user_id), principal.encode(), ex=TTL_S, nx=True)
        except RedisError:
            on_redis_error()
    return principal


def principals_changed(session: Session) -> dict[int, Principal | None]:
    """Users the pending flush changes or deletes (None for a deleted one)."""
    changed: dict[int, Principal | None] = {}
    for user in session.dirty:
        if isinstance(user, User) and user.id is not None:
            changed[user.id] = Principal.of(user)
    for user in session.deleted:
        if isinstance(user, User) and user.id is not None:
            changed[user.id] = None
    return changed


def publish(redis: Redis, changed: dict[int, Principal | None]) -> None:
    """After commit: overwrite (or drop) the copies of the changed users."""
    pipe = redis.pipeline(transaction=False)
    for user_id, principal in changed.items():
        if principal is None:
            pipe.delete(KEY.format(user_id))
        else:
            pipe.set(KEY.format(user_id), principal.encode(), ex=TTL_S)
    pipe.execute()
