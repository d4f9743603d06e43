"""Prescriptions as received (FHIR kept verbatim) and their items."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, JSONType, TimestampMixin, str_enum, utcnow
from .catalog import Medicine

if TYPE_CHECKING:
    from .users import PatientProfile, Prescriber


class PrescriptionStatus(enum.StrEnum):
    RECEIVED = "received"
    AWAITING_VERIFICATION = "awaiting_verification"
    AWAITING_SECOND_CHECK = "awaiting_second_check"
    QUERIED = "queried"  # on hold: the prescriber has been asked a question
    VERIFIED = "verified"
    REJECTED = "rejected"
    DISPENSED = "dispensed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Prescription(TimestampMixin, Base):
    __tablename__ = "prescriptions"
    __table_args__ = (
        CheckConstraint("repeats_allowed >= 0", name="repeats_allowed_non_negative"),
        CheckConstraint(
            "repeats_issued >= 0 AND repeats_issued <= repeats_allowed",
            name="repeats_issued_within_allowed",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # EPS short-form prescription id (e.g. "A0548B-A99968-451485"); the idempotency key.
    prescription_id: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    prescriber_id: Mapped[int | None] = mapped_column(ForeignKey("prescribers.id"))
    pharmacy_id: Mapped[int | None] = mapped_column(ForeignKey("pharmacies.id"))
    status: Mapped[PrescriptionStatus] = mapped_column(
        str_enum(PrescriptionStatus, "prescription_status"),
        default=PrescriptionStatus.RECEIVED,
        index=True,
    )
    prescription_type: Mapped[str] = mapped_column(String(20), default="acute")  # or repeat
    issued_on: Mapped[date | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    urgent: Mapped[bool] = mapped_column(default=False)
    repeats_allowed: Mapped[int] = mapped_column(default=0)
    repeats_issued: Mapped[int] = mapped_column(default=0)
    # The bundle exactly as received, and the OperationOutcome of automatic validation.
    source_bundle: Mapped[dict[str, Any]] = mapped_column(JSONType)
    validation_outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(default=1)

    items: Mapped[list[PrescriptionItem]] = relationship(
        back_populates="prescription", cascade="all, delete-orphan"
    )
    patient: Mapped[PatientProfile] = relationship()
    prescriber: Mapped[Prescriber | None] = relationship()

    __mapper_args__ = {"version_id_col": version}


class PrescriptionItem(Base):
    __tablename__ = "prescription_items"
    __table_args__ = (
        UniqueConstraint("prescription_id", "line_id"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "supply_duration_days IS NULL OR supply_duration_days > 0",
            name="supply_duration_positive",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    prescription_id: Mapped[int] = mapped_column(
        ForeignKey("prescriptions.id", ondelete="CASCADE"), index=True
    )
    line_id: Mapped[str] = mapped_column(String(64))  # the MedicationRequest's id/identifier
    medicine_id: Mapped[int | None] = mapped_column(ForeignKey("medicines.id"))
    medication_code: Mapped[str] = mapped_column(String(20))
    medication_display: Mapped[str] = mapped_column(String(300))
    quantity: Mapped[int]
    quantity_unit: Mapped[str | None] = mapped_column(String(50))
    dosage_text: Mapped[str | None] = mapped_column(Text)
    supply_duration_days: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(20), default="active")

    prescription: Mapped[Prescription] = relationship(back_populates="items")
    medicine: Mapped[Medicine | None] = relationship()
