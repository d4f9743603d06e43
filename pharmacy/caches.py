"""The Redis-backed caches, emptied together (after a restore, or between tests).

Caches: signed-in users' principals (services/principals.py) and catalogue pages (versioned
by services/catalog.VERSION_KEY; raising the version retires every process's pages).
"""

from __future__ import annotations

from redis import Redis

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
