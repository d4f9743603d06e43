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
    """RQ entry point: prescriptions past their legal validity expire (see
    `prescriptions.expire_prescription`). The slow search takes no locks; then each
    prescription is locked, changed and committed on its own, so a failure or a timeout
    keeps what was done. Safe to retry or run twice.

    Returns:
        How many prescriptions this run changed.
    """
    from ..services import prescriptions

    now = utcnow()
    candidates = prescriptions.lapsed_prescriptions(db.session, now=now)
    db.session.rollback()  # end the read: no snapshot or lock held while changing
    changed = 0
    for rx_id in candidates:
        try:
            changed += prescriptions.expire_prescription(db.session, rx_id, now=now)
            db.session.commit()
        except Exception:
            db.session.rollback()
            logger.exception("could not expire prescription %s", rx_id)
    return changed
