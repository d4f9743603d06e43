"""Unbound extension objects, bound to an app in ``create_app``, and the Redis/queue factory."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from redis import Redis
from rq import Queue
from sqlalchemy.orm import Session, scoped_session

from .models.base import Base
from .schemas.common import ProblemSchema


class ProblemApi(Api):  # type: ignore[misc]
    """flask-smorest's Api, documenting errors as RFC 9457 problems.

    flask-smorest registers its own HTTPException handler with a different body; ours (in
    ``errors.py``) answers every error in one shape, so that registration is skipped.
    """

    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self) -> None:
        return None


class Database(SQLAlchemy):
    """Flask-SQLAlchemy, typed as the services use it.

    ``db.session`` is a scoped session: a proxy of the current app context's Session with
    every Session method. The services take a plain ``Session`` (they run in requests, RQ
    jobs and tests alike), so it is declared as one; ``release_session`` is the one use of
    the scoped session's own ``remove``.
    """

    if TYPE_CHECKING:
        session: Session  # type: ignore[assignment]


db = Database(model_class=Base)


def release_session() -> None:
    """Close the context's session and give its connection back to the pool."""
    registry: scoped_session[Session] = db.session  # type: ignore[assignment]
    registry.remove()
migrate = Migrate()
csrf = CSRFProtect()
api = ProblemApi()

_REDIS_EXT = "dispensary.redis"


def init_redis(app: Flask) -> None:
    """Create the app's Redis client (lazy: no connection is opened here)."""
    app.extensions[_REDIS_EXT] = Redis.from_url(
        app.config["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5
    )


def get_redis(app: Flask | None = None) -> Redis:
    """The Redis client of ``app`` (default: the current app)."""
    return (app or current_app).extensions[_REDIS_EXT]  # type: ignore[no-any-return]


def commit_keeping_loaded(session: Any) -> None:
    """Commit without expiring what the session holds (it is not read back afterwards).

    For a request that commits one step and goes on with the same rows: whatever the next
    step must see fresh it re-reads under a lock, as it would anyway.
    """
    target = session() if isinstance(session, scoped_session) else session
    target.expire_on_commit = False
    try:
        target.commit()
    finally:
        target.expire_on_commit = True


_CACHE_PAUSE_S = 10.0
_cache_paused_until = 0.0


def cache_redis(app: Flask | None = None) -> Redis | None:
    """The Redis client for optional caches, or None while Redis is failing.

    A cache must not make requests slower when Redis is down: after ``cache_failed`` the
    caches are bypassed for a few seconds instead of each request waiting for a timeout.
    """
    if time.monotonic() < _cache_paused_until:
        return None
    return get_redis(app)


def cache_failed() -> None:
    global _cache_paused_until
    _cache_paused_until = time.monotonic() + _CACHE_PAUSE_S


def get_queue(name: str, app: Flask | None = None) -> Queue:
    """An RQ queue on the app's Redis."""
    return Queue(name, connection=get_redis(app))
