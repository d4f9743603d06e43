"""Order jobs."""

from __future__ import annotations

import logging

from ..extensions import db
from ..models.base import utcnow
from ..services import checkout, orders

logger = logging.getLogger(__name__)


def release_unpaid_orders() -> int:
    """RQ entry point: cancel orders left unpaid past their hold, giving their stock back.

    Each order is handled in its own transaction (row-locked), so one failure does not hold
    back the rest, and a rerun finds nothing left to do.

    Returns:
        How many orders were cancelled.
    """
    released = 0
    for order_id in [o.id for o in orders.expired_unpaid(db.session, utcnow())]:
        order = orders.get_order(db.session, order_id, lock=True)
        if order.status.value != "placed":  # paid or cancelled meanwhile
            db.session.rollback()
            continue
        payment = checkout.latest_payment(order)
        if payment is not None and payment.status.value == "authorised":
            # Paid (3-D Secure finished) but never confirmed: move on, do not cancel.
            orders.mark_paid(db.session, order, actor=None)
            db.session.commit()
            continue
        try:
            checkout.release_unpaid(db.session, order)
            db.session.commit()
            released += 1
        except Exception:
            db.session.rollback()
            logger.exception("could not release unpaid order %s", order_id)
    return released


def expire_lapsed_prescriptions() -> int:
    """RQ entry point: verified prescriptions past their legal validity become expired (see
    `prescriptions.expire_lapsed`). Safe to retry or run twice.

    Returns:
        How many prescriptions this run expired.
    """
    from ..services import prescriptions

    expired = prescriptions.expire_lapsed(db.session, now=utcnow())
    db.session.commit()
    return len(expired)
