"""Writing audit events: every state change of a record goes through ``record``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from ..models import AuditEvent, User


def record(
    session: Session,
    *,
    action: str,
    entity_type: str,
    entity_id: int | str,
    actor: User | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    reason: str | None = None,
    request_id: str | None = None,
) -> AuditEvent:
    """Append one audit event (who, what, when, before/after) to the session.

    Args:
        action: dotted verb such as ``"user.login_failed"`` or ``"stock.batch_expired"``.
        before/after: the changed fields only; never patient names or addresses.
    """
    event = AuditEvent(
        actor_id=actor.id if actor is not None else None,
        action=action,
        entity_type=entity_type,
        entity_id=str(entity_id),
        before=dict(before) if before is not None else None,
        after=dict(after) if after is not None else None,
        reason=reason,
        request_id=request_id,
    )
    session.add(event)
    return event
