"""The audit trail: who did what to which record, when, with the state before and after."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, JSONType, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_entity", "entity_type", "entity_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(64))  # e.g. "prescription.verified"
    entity_type: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))


@event.listens_for(AuditEvent, "before_update")
@event.listens_for(AuditEvent, "before_delete")
def _audit_is_append_only(mapper: object, connection: object, target: AuditEvent) -> None:
    raise PermissionError("audit events are append-only")


class AuditSeal(Base):
    """The tamper-evident chain over the audit trail: one seal per event, in id order.

    ``hash = sha256(prev_hash + canonical JSON of the event)``; changing any sealed event, or
    removing one, breaks every later hash. Seals are written by a periodic job (so writing an
    audit event takes no global lock) and are themselves append-only.
    """

    __tablename__ = "audit_seals"

    event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id"), primary_key=True)
    sequence: Mapped[int] = mapped_column(unique=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime] = mapped_column(default=utcnow)


@event.listens_for(AuditSeal, "before_update")
@event.listens_for(AuditSeal, "before_delete")
def _seals_are_append_only(mapper: object, connection: object, target: AuditSeal) -> None:
    raise PermissionError("audit seals are append-only")
