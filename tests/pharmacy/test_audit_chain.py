"""The audit trail's hash chain detects a hand-edited, deleted or slipped-in row."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from pharmacy.models.base import utcnow
from pharmacy.services import audit, audit_chain


def _events(db, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        audit.record(db.session, action="test.event", entity_type="thing", entity_id=i,
                     after={"n": i})
    db.session.commit()


def _seal_all(db) -> int:  # type: ignore[no-untyped-def]
    sealed = audit_chain.seal(db.session, now=utcnow() + timedelta(hours=1))
    db.session.commit()
    return sealed


def test_an_untouched_chain_verifies_and_sealing_is_incremental(db) -> None:  # type: ignore[no-untyped-def]
    _events(db, 5)
    assert audit_chain.seal(db.session) == 0  # too fresh: may still have older neighbours
    assert _seal_all(db) == 5
    _events(db, 3)
    assert _seal_all(db) == 3
    assert _seal_all(db) == 0
    result = audit_chain.verify(db.session)
    assert result.ok and result.checked == 8 and result.unsealed == 0


def _hand_edit(db, sql: str) -> None:  # type: ignore[no-untyped-def]
    """What an attacker with database rights would do: switch the guard off, edit, back on."""
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        conn.execute(text(sql))
        conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))


def test_a_hand_edited_row_is_detected(db, runner) -> None:  # type: ignore[no-untyped-def]
    _events(db, 4)
    _seal_all(db)
    _hand_edit(db, "UPDATE audit_events SET reason = 'nothing to see' WHERE entity_id = '2'")
    result = audit_chain.verify(db.session)
    assert not result.ok and result.problem == "a sealed event was changed"
    cli = runner.invoke(args=["audit-verify", "--no-seal"])
    assert cli.exit_code == 1 and "TAMPERED" in cli.output


def test_a_deleted_row_is_detected(db) -> None:  # type: ignore[no-untyped-def]
    _events(db, 4)
    _seal_all(db)
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_seals DISABLE TRIGGER audit_seals_append_only"))
        conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
        conn.execute(text("DELETE FROM audit_seals WHERE sequence = 2"))
        conn.execute(text("DELETE FROM audit_events WHERE entity_id = '1'"))
        conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
        conn.execute(text("ALTER TABLE audit_seals ENABLE TRIGGER audit_seals_append_only"))
    assert not audit_chain.verify(db.session).ok


def test_the_cli_reports_ok(db, runner) -> None:  # type: ignore[no-untyped-def]
    _events(db, 2)
    result = runner.invoke(args=["audit-verify"])
    assert result.exit_code == 0 and "ok:" in result.output
