"""Stock jobs."""

from __future__ import annotations

import logging
from datetime import date

from flask import Flask
from rq import Queue
from rq.job import Job

from ..extensions import db, get_queue
from ..models.base import utcnow
from ..services import stock
from . import DEFAULT_QUEUE

logger = logging.getLogger(__name__)


def expire_stock(day_iso: str | None = None) -> int:
    """RQ entry point: mark batches past their expiry as expired.

    Runs inside the app context pushed by ``pharmacy.worker``. Safe to retry or run twice.

    Returns:
        How many batches this run expired.
    """
    day = date.fromisoformat(day_iso) if day_iso else utcnow().date()
    expired = stock.expire_batches(db.session, day)
    db.session.commit()
    return len(expired)


def enqueue_expire_stock(day: date, app: Flask | None = None) -> Job:
    """Queue the expiry sweep for ``day``; one job per day however often this is called."""
    queue: Queue = get_queue(DEFAULT_QUEUE, app)
    job_id = f"expire-stock-{day.isoformat()}"
    existing = queue.fetch_job(job_id)
    if existing is not None and existing.get_status(refresh=True) in {"queued", "started",
                                                                      "deferred", "scheduled"}:
        return existing
    return queue.enqueue(expire_stock, day.isoformat(), job_id=job_id, job_timeout=300,
                         result_ttl=86_400, failure_ttl=7 * 86_400)


def seal_audit_trail() -> int:
    """RQ entry point (every few minutes): extend the tamper-evident chain over the audit trail."""
    from ..services import audit_chain

    sealed = audit_chain.seal(db.session)
    db.session.commit()
    return sealed
