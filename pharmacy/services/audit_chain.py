"""The tamper-evident chain over the audit trail: sealing and verifying.

Events are sealed in id order by a periodic job once they are older than ``settle`` (every
transaction that could still commit an older id has finished by then); each seal's hash
covers the previous hash and the event's full content. ``verify`` recomputes the chain: a
hand-edited, deleted or re-ordered sealed event is found.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..models import AuditEvent, AuditSeal
from ..models.base import utcnow

GENESIS = "0" * 64


def event_digest(event: AuditEvent, prev_hash: str) -> str:
    body = {
        "id": event.id, "occurred_at": event.occurred_at.isoformat(),
        "actor_id": event.actor_id, "action": event.action,
        "entity_type": event.entity_type, "entity_id": event.entity_id,
        "before": event.before, "after": event.after, "reason": event.reason,
        "request_id": event.request_id,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def seal(session: Session, *, now: datetime | None = None,
         settle: timedelta = timedelta(minutes=5), limit: int = 10_000) -> int:
    """Seal the unsealed events older than ``settle``, in id order. Returns how many."""
    if session.get_bind().dialect.name == "postgresql":
        # One sealer at a time (transaction-scoped advisory lock).
        session.execute(text("SELECT pg_advisory_xact_lock(7346001)"))
    now = now or utcnow()
    last = session.scalar(select(AuditSeal).order_by(AuditSeal.sequence.desc()).limit(1))
    prev_hash = last.hash if last else GENESIS
    sequence = last.sequence if last else 0
    after_id = last.event_id if last else 0
    events = session.scalars(select(AuditEvent).where(
        AuditEvent.id > after_id, AuditEvent.occurred_at < now - settle)
        .order_by(AuditEvent.id).limit(limit)).all()
    for event in events:
        sequence += 1
        digest = event_digest(event, prev_hash)
        session.add(AuditSeal(event_id=event.id, sequence=sequence, prev_hash=prev_hash,
                              hash=digest, sealed_at=now))
        prev_hash = digest
    session.flush()
    return len(events)


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    unsealed: int
    problem: str | None = None
    event_id: int | None = None


def verify(session: Session) -> Verification:
    """Recompute the whole chain; report the first event that does not match."""
    prev_hash, expected_sequence, checked = GENESIS, 1, 0
    rows = session.execute(select(AuditSeal, AuditEvent).outerjoin(
        AuditEvent, AuditEvent.id == AuditSeal.event_id).order_by(AuditSeal.sequence))
    last_event_id = 0
    for seal_row, event in rows:
        if seal_row.sequence != expected_sequence:
            return Verification(False, checked, 0, "a seal is missing", seal_row.event_id)
        if event is None:
            return Verification(False, checked, 0, "a sealed event was deleted",
                                seal_row.event_id)
        if seal_row.prev_hash != prev_hash or event_digest(event, prev_hash) != seal_row.hash:
            return Verification(False, checked, 0, "a sealed event was changed", event.id)
        prev_hash, last_event_id = seal_row.hash, event.id
        expected_sequence += 1
        checked += 1
    skipped = session.scalar(select(func.count(AuditEvent.id)).where(
        AuditEvent.id < last_event_id,
        AuditEvent.id.not_in(select(AuditSeal.event_id)))) or 0
    if skipped:
        return Verification(False, checked, 0, "an event was inserted inside the sealed range")
    unsealed = session.scalar(select(func.count(AuditEvent.id)).where(
        AuditEvent.id > last_event_id)) or 0
    return Verification(True, checked, int(unsealed))
