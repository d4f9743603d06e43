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

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from ..models import Role, User
from .auth import TokenClaims, token_claims
from .ttl_cache import TtlCache

__all__ = ["KEY", "TTL_S", "Principal", "TokenClaims", "checked_token", "forget_locally",
           "principal_for", "principals_changed", "publish", "token_claims"]

KEY = "dispensary:principal:{}"
TTL_S = 300
# Each process also remembers a principal for a second (a change made in this process
# forgets it at once; one made in another is seen within LOCAL_TTL_S), and a checked token
# until it expires (at most a minute), so that a busy API need not ask Redis, or verify a
# signature, on every call.
LOCAL_TTL_S = 1.0
_local: TtlCache[Principal] = TtlCache(ttl_s=LOCAL_TTL_S)
_tokens: TtlCache[TokenClaims] = TtlCache(ttl_s=60.0, max_entries=8192)


def checked_token(secret_key: str, token: str, *, max_age_s: int) -> TokenClaims | None:
    """``auth.token_claims``, remembered per process until the token expires."""
    key = (secret_key, token)
    claims = _tokens.get(key)
    if claims is not None and claims.expires_at > time.time():
        return claims
    claims = token_claims(secret_key, token, max_age_s=max_age_s)
    if claims is not None:
        _tokens.put(key, claims, ttl_s=min(60.0, claims.expires_at - time.time()))
    return claims


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
    """The user's principal from this process's memory, Redis, else the database."""
    remembered = _local.get(user_id)
    if remembered is not None:
        return remembered
    principal = _principal_from_redis_or_db(session, redis, user_id, on_redis_error)
    if principal is not None:
        _local.put(user_id, principal)
    return principal


def _principal_from_redis_or_db(session: Session, redis: Redis | None, user_id: int,
                                on_redis_error: Callable[[], None]) -> Principal | None:
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


def forget_locally(user_ids: Iterable[int] | None = None) -> None:
    """Drop this process's remembered principals (all of them without ``user_ids``)."""
    if user_ids is None:
        _local.clear()
        return
    for user_id in user_ids:
        _local.discard(user_id)


def publish(redis: Redis, changed: dict[int, Principal | None]) -> None:
    """After commit: overwrite (or drop) the copies of the changed users."""
    forget_locally(changed)
    pipe = redis.pipeline(transaction=False)
    for user_id, principal in changed.items():
        if principal is None:
            pipe.delete(KEY.format(user_id))
        else:
            pipe.set(KEY.format(user_id), principal.encode(), ex=TTL_S)
    pipe.execute()
