"""Reading the formulary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..errors import NotFound
from ..models import Medicine
from .ttl_cache import TtlCache

# The columns a catalogue entry shows (MedicineSchema); read as plain rows, not ORM objects:
# browsing is the busiest read in the shop and needs neither identity map nor change tracking.
CATALOGUE_COLUMNS = (
    Medicine.id, Medicine.code, Medicine.name, Medicine.ingredient, Medicine.strength,
    Medicine.form, Medicine.atc, Medicine.cd_schedule, Medicine.cold_chain,
    Medicine.prescription_only, Medicine.pack_size, Medicine.pack_unit,
    Medicine.unit_price_minor,
)


# Raised whenever a committed transaction changed a medicine (see PAGES).
VERSION_KEY = "dispensary:catalogue:version"


@dataclass(frozen=True)
class MedicinePage:
    items: list[dict[str, Any]]
    page: int
    page_size: int
    total: int

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "page": self.page, "page_size": self.page_size,
                "total": self.total}


def search_medicines(session: Session, *, q: str | None = None,
                     prescription_only: bool | None = None, page: int = 1,
                     page_size: int = 50) -> MedicinePage:
    """Active medicines whose name contains ``q`` (case-insensitive), by name.

    One round trip: the page's rows carry the total match count (``count(*) OVER ()``).
    A page past the end has no rows to carry it, so only then is the total counted apart.
    """
    where = [Medicine.is_active.is_(True)]
    if q:
        escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(func.lower(Medicine.name).like(f"%{escaped}%", escape="\\"))
    if prescription_only is not None:
        where.append(Medicine.prescription_only.is_(prescription_only))
    total_col = func.count().over().label("total")
    rows = session.execute(
        select(*CATALOGUE_COLUMNS, total_col).where(*where)
        .order_by(Medicine.name, Medicine.id).limit(page_size).offset((page - 1) * page_size)
    ).all()
    if rows:
        total = int(rows[0].total)
    else:
        total = session.scalar(select(func.count()).select_from(Medicine).where(*where)) or 0
    keys = [column.key for column in CATALOGUE_COLUMNS]
    items = [dict(zip(keys, row[:-1], strict=True)) for row in rows]
    return MedicinePage(items, page, page_size, total)


# This process's finished catalogue pages, keyed by (catalogue version, query): the version
# is a counter in Redis raised whenever a transaction that changed a medicine commits, so
# every process stops serving its older pages at once; pages also expire after a minute,
# which bounds how long a change made outside the application (plain SQL) goes unseen.
PAGES: TtlCache[bytes] = TtlCache(ttl_s=60.0, max_entries=512)
# This process's remembered catalogue version (for a second).
VERSIONS: TtlCache[bytes] = TtlCache(ttl_s=1.0, max_entries=1)


def forget_locally() -> None:
    PAGES.clear()
    VERSIONS.clear()


def changes_medicines(session: Session) -> bool:
    """Whether the session's pending flush adds, changes or deletes a medicine."""
    return any(isinstance(obj, Medicine)
               for objects in (session.new, session.dirty, session.deleted) for obj in objects)


def get_medicine(session: Session, medicine_id: int) -> Medicine:
    medicine = session.get(Medicine, medicine_id)
    if medicine is None:
        raise NotFound(f"No medicine with id {medicine_id}.")
    return medicine
