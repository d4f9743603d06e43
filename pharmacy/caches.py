"""The Redis-backed caches, emptied together (after a restore, or between tests).

Caches: signed-in users' principals (services/principals.py) and catalogue pages (versioned
by services/catalog.VERSION_KEY; raising the version retires every process's pages).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from redis import Redis
from sqlalchemy import event
from sqlalchemy.orm import Session

from .services import catalog, principals


def clear_caches(redis: Redis) -> int:
    """Drop every cached principal and retire every cached catalogue page; returns keys dropped."""
    principals.forget_locally()
    catalog.forget_locally()
    keys = list(redis.scan_iter(match=principals.KEY.format("*"), count=1000))
    if keys:
        redis.delete(*keys)
    redis.incr(catalog.VERSION_KEY)
    return len(keys)


def on_commit_of(name: str, collect: Callable[[Session], Mapping[Any, Any] | None],
                 publish: Callable[[dict[Any, Any]], None]) -> None:
    """Call ``publish(changes)`` after a transaction commits whose flushes ``collect``-ed
    changes (merged in flush order, later values winning); a rollback drops them.

    How a cache follows the database: collect at flush, while the session still shows what
    changed; publish only once it is committed, so no reader sees a change that may vanish.
    """
    key = f"dispensary.on_commit.{name}"

    def _collect(session: Session, _context: Any) -> None:
        found = collect(session)
        if found:
            session.info.setdefault(key, {}).update(found)

    def _publish(session: Session) -> None:
        pending = session.info.pop(key, None)
        if pending:
            publish(pending)

    def _drop(session: Session) -> None:
        session.info.pop(key, None)

    event.listen(Session, "after_flush", _collect)
    event.listen(Session, "after_commit", _publish)
    event.listen(Session, "after_rollback", _drop)
