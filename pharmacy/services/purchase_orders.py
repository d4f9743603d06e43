"""Purchase orders to wholesalers: drafted from reorder suggestions, checked and adjusted,
sent, received through goods in (`inventory_ledger.receive`), or cancelled.

Open orders (draft or sent) count as stock on order in the next reorder suggestions, so an
order that will never arrive must be cancelled here, or it holds back that medicine's
suggestions.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import Conflict, InvalidRequest, NotFound
from ..models import PurchaseOrder, PurchaseOrderLine, PurchaseOrderStatus, User
from . import audit

OPEN = (PurchaseOrderStatus.DRAFT, PurchaseOrderStatus.SENT)


def list_orders(session: Session, pharmacy_id: int, *, open_only: bool = True,
                limit: int = 200) -> list[PurchaseOrder]:
    stmt = select(PurchaseOrder).where(PurchaseOrder.pharmacy_id == pharmacy_id)
    if open_only:
        stmt = stmt.where(PurchaseOrder.status.in_(OPEN))
    return list(session.scalars(stmt.order_by(PurchaseOrder.id.desc()).limit(limit)))


def get_order(session: Session, order_id: int, *, pharmacy_id: int,
              lock: bool = False) -> PurchaseOrder:
    stmt = select(PurchaseOrder).where(PurchaseOrder.id == order_id,
                                       PurchaseOrder.pharmacy_id == pharmacy_id)
    if lock:
        stmt = stmt.with_for_update()
    order = session.scalar(stmt)
    if order is None:
        raise NotFound(f"No purchase order {order_id}.")
    return order


def _status(session: Session, order: PurchaseOrder, new: PurchaseOrderStatus, *,
            actor: User, reason: str | None = None) -> None:
    before = order.status
    order.status = new
    audit.record(session, action=f"purchase_order.{new.value}", entity_type="purchase_order",
                 entity_id=order.id, actor=actor, reason=reason,
                 before={"status": before.value}, after={"status": new.value})
    session.flush()


def mark_sent(session: Session, order: PurchaseOrder, *, actor: User) -> PurchaseOrder:
    """The draft has gone to the wholesaler; sending it again changes nothing."""
    if order.status is PurchaseOrderStatus.SENT:
        return order
    if order.status is not PurchaseOrderStatus.DRAFT:
        raise Conflict(f"This purchase order is {order.status.value}; only a draft is sent.")
    _status(session, order, PurchaseOrderStatus.SENT, actor=actor)
    return order


def cancel(session: Session, order: PurchaseOrder, *, reason: str,
           actor: User) -> PurchaseOrder:
    """Nothing more will come: the order stops counting as stock on order. Units already
    received stay received."""
    reason = reason.strip()
    if not reason:
        raise InvalidRequest("Say why the purchase order is cancelled.")
    if order.status is PurchaseOrderStatus.CANCELLED:
        return order
    if order.status not in OPEN:
        raise Conflict(f"This purchase order is {order.status.value}; it cannot be cancelled.")
    _status(session, order, PurchaseOrderStatus.CANCELLED, actor=actor, reason=reason)
    return order


def set_line_quantity(session: Session, order: PurchaseOrder, line_id: int, quantity: int, *,
                      actor: User) -> PurchaseOrderLine | None:
    """Change a draft's line to ``quantity`` units (whole packs); 0 removes the line.

    Returns the line, or None when it was removed.
    """
    if order.status is not PurchaseOrderStatus.DRAFT:
        raise Conflict("Only a draft purchase order can be changed; cancel a sent one and "
                       "draft another.")
    line = next((ln for ln in order.lines if ln.id == line_id), None)
    if line is None:
        raise NotFound(f"No line {line_id} on this purchase order.")
    pack = max(1, line.medicine.pack_size or 1)
    if quantity < 0 or quantity % pack:
        raise InvalidRequest(f"Order {line.medicine.name} in whole packs of {pack}.")
    if quantity == line.quantity:
        return line
    if quantity == 0 and len(order.lines) == 1:
        raise Conflict("That is the order's only line: cancel the order instead.")
    before = line.quantity
    audit.record(session, action="purchase_order.line_changed", entity_type="purchase_order",
                 entity_id=order.id, actor=actor,
                 before={"medicine_id": line.medicine_id, "quantity": before},
                 after={"medicine_id": line.medicine_id, "quantity": quantity})
    if quantity == 0:
        order.lines.remove(line)
        session.flush()
        return None
    line.quantity = quantity
    session.flush()
    return line
