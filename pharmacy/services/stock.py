"""Stock batches: status changes that every later stock feature builds on."""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import BatchStatus, MovementKind, StockBatch, StockMovement
from . import audit

logger = logging.getLogger(__name__)


def expire_batches(session: Session, today: date) -> list[int]:
    """Mark every available batch whose expiry date has passed as expired.

    A medicine may be supplied up to and including its expiry date, so a batch expires on the
    day after. Each change is a ledger movement (no quantity change: the stock is still on the
    shelf, but unusable until written off) and an audit event. Idempotent: an expired batch is
    not touched again. Rows are locked in id order so concurrent runs cannot deadlock.

    Returns:
        The ids of the batches this call expired.
    """
    batches = session.scalars(
        select(StockBatch)
        .where(StockBatch.status == BatchStatus.AVAILABLE, StockBatch.expiry_date < today)
        .order_by(StockBatch.id)
        .with_for_update()
    ).all()
    for batch in batches:
        batch.status = BatchStatus.EXPIRED
        session.add(StockMovement(batch=batch, kind=MovementKind.EXPIRED,
                                  reason=f"expired on {batch.expiry_date.isoformat()}"))
        audit.record(session, action="stock.batch_expired", entity_type="stock_batch",
                     entity_id=batch.id, before={"status": BatchStatus.AVAILABLE.value},
                     after={"status": BatchStatus.EXPIRED.value})
    session.flush()
    logger.info("expired %d batches (as of %s)", len(batches), today.isoformat())
    return [b.id for b in batches]
