"""Constraints in the database back up the code."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError

from pharmacy.models import MovementKind, PatientProfile, StockMovement
from tests.factories import PatientFactory, StockBatchFactory, UserFactory


def test_on_hand_can_never_go_below_zero(db) -> None:  # type: ignore[no-untyped-def]
    batch = StockBatchFactory(quantity_on_hand=5)
    db.session.commit()
    with pytest.raises(IntegrityError, match="on_hand_non_negative"):
        db.session.execute(text("UPDATE stock_batches SET quantity_on_hand = -1 WHERE id = :id"),
                           {"id": batch.id})
    db.session.rollback()


def test_reserved_never_exceeds_on_hand(db) -> None:  # type: ignore[no-untyped-def]
    batch = StockBatchFactory(quantity_on_hand=5)
    db.session.commit()
    batch.quantity_reserved = 6
    with pytest.raises(IntegrityError, match="reserved_within_on_hand"):
        db.session.commit()
    db.session.rollback()


def test_stock_ledger_rows_cannot_be_edited_or_deleted(db) -> None:  # type: ignore[no-untyped-def]
    batch = StockBatchFactory()
    movement = StockMovement(batch=batch, kind=MovementKind.RECEIVED, on_hand_change=100)
    db.session.add(movement)
    db.session.commit()
    movement.on_hand_change = 1000
    with pytest.raises(PermissionError):
        db.session.flush()
    db.session.rollback()
    db.session.delete(db.session.get(StockMovement, movement.id))
    with pytest.raises(PermissionError):
        db.session.flush()
    db.session.rollback()


def test_a_patient_needs_some_identifier(db) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IntegrityError, match="has_identifier"):
        PatientFactory(nhs_number=None, other_identifier=None, other_identifier_system=None)
    db.session.rollback()


def test_emails_are_unique(db) -> None:  # type: ignore[no-untyped-def]
    UserFactory(email="same@example.com")
    with pytest.raises(IntegrityError):
        UserFactory(email="same@example.com")
    db.session.rollback()


def test_times_come_back_timezone_aware_utc_and_naive_times_are_refused(db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    db.session.expire_all()
    assert user.created_at.utcoffset() is not None
    assert user.created_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    user.last_login_at = datetime(2026, 1, 1, 12, 0)  # naive
    with pytest.raises(StatementError, match="naive datetime"):
        db.session.commit()
    db.session.rollback()


def test_patient_relationships_load(db) -> None:  # type: ignore[no-untyped-def]
    PatientFactory(nhs_number="9434765919")
    db.session.commit()
    patient = db.session.scalar(select(PatientProfile))
    assert patient is not None and patient.allergies == [] and patient.addresses == []
