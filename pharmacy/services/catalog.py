"""Reading the formulary."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..models import Medicine


@dataclass(frozen=True)
class MedicinePage:
    items: list[Medicine]
    page: int
    page_size: int
    total: int


def search_medicines(session: Session, *, q: str | None = None,
                     prescription_only: bool | None = None, page: int = 1,
                     page_size: int = 50) -> MedicinePage:
    """Active medicines whose name contains ``q`` (case-insensitive), by name."""
    stmt = select(Medicine).where(Medicine.is_active.is_(True))
    if q:
        escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(func.lower(Medicine.name).like(f"%{escaped}%", escape="\\"))
    if prescription_only is not None:
        stmt = stmt.where(Medicine.prescription_only.is_(prescription_only))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    items = session.scalars(
        stmt.order_by(Medicine.name, Medicine.id).limit(page_size).offset((page - 1) * page_size)
    ).all()
    return MedicinePage(list(items), page, page_size, total)


def get_medicine(session: Session, medicine_id: int) -> Medicine:
    medicine = session.get(Medicine, medicine_id)
    if medicine is None:
        raise NotFound(f"No medicine with id {medicine_id}.")
    return medicine
