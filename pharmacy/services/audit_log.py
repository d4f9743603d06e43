"""Reading the audit trail (admins): filtered, newest first, paged."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import AuditEvent, User


@dataclass(frozen=True)
class AuditFilter:
    entity_type: str | None = None
    entity_id: str | None = None
    action: str | None = None        # prefix, e.g. "prescription." or "user.login"
    actor_email: str | None = None
    since: date | None = None
    until: date | None = None        # inclusive


@dataclass(frozen=True)
class AuditPage:
    events: list[tuple[AuditEvent, str | None]]   # (event, actor e-mail)
    total: int
    page: int
    page_size: int


def search(session: Session, filters: AuditFilter, *, page: int = 1,
           page_size: int = 50) -> AuditPage:
    stmt = select(AuditEvent, User.email).outerjoin(User, User.id == AuditEvent.actor_id)
    if filters.entity_type:
        stmt = stmt.where(AuditEvent.entity_type == filters.entity_type)
    if filters.entity_id:
        stmt = stmt.where(AuditEvent.entity_id == filters.entity_id)
    if filters.action:
        escaped = filters.action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(AuditEvent.action.like(f"{escaped}%", escape="\\"))
    if filters.actor_email:
        stmt = stmt.where(func.lower(User.email) == filters.actor_email.strip().lower())
    if filters.since:
        stmt = stmt.where(AuditEvent.occurred_at >= datetime.combine(filters.since, time(),
                                                                     tzinfo=UTC))
    if filters.until:
        stmt = stmt.where(AuditEvent.occurred_at < datetime.combine(
            filters.until + timedelta(days=1), time(), tzinfo=UTC))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(stmt.order_by(AuditEvent.id.desc()).limit(page_size)
                           .offset((page - 1) * page_size)).all()
    return AuditPage([(event, email) for event, email in rows], total, page, page_size)


def entity_types(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEvent.entity_type).distinct()
                                .order_by(AuditEvent.entity_type)))
