"""Liveness and readiness probes; no authentication."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from sqlalchemy import text

from .extensions import db, get_redis

logger = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    """200 while the process can answer."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    """200 when the database and Redis both answer; 503 naming what is down otherwise."""
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        logger.warning("readiness: database unreachable", exc_info=True)
        db.session.rollback()
        checks["database"] = "unreachable"
    try:
        get_redis().ping()
        checks["redis"] = "ok"
    except Exception:
        logger.warning("readiness: redis unreachable", exc_info=True)
        checks["redis"] = "unreachable"
    down = sorted(name for name, state in checks.items() if state != "ok")
    body = {"status": "ready" if not down else "unavailable", "checks": checks, "down": down}
    return jsonify(body), (200 if not down else 503)
