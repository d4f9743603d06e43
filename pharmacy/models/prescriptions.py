"""Prescriptions as received (FHIR kept verbatim) and their items."""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import CheckConstraint, ForeignKey, Numeric, String, Text, UniqueConstraint
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
    # None only for a rejected prescription whose patient could not be identified.
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
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
    # Controlled drugs of Schedule 2/3 need a second pharmacist after the clinical check.
    needs_second_check: Mapped[bool] = mapped_column(default=False)
    first_checked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    first_checked_at: Mapped[datetime | None]
    # A repeat issue points at the original prescription; issue 1 is the original itself.
    original_id: Mapped[int | None] = mapped_column(ForeignKey("prescriptions.id"), index=True)
    issue_number: Mapped[int] = mapped_column(default=1)
    query_text: Mapped[str | None] = mapped_column(Text)
    dispensed_at: Mapped[datetime | None]
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
    patient: Mapped[PatientProfile | None] = relationship()
    prescriber: Mapped[Prescriber | None] = relationship()
    reviews: Mapped[list[PrescriptionReview]] = relationship(
        back_populates="prescription", order_by="PrescriptionReview.id"
    )

    __mapper_args__ = {"version_id_col": version}


class PrescriptionItem(Base):
    __tablename__ = "prescription_items"
    __table_args__ = (
        UniqueConstraint("prescription_id", "line_id"),
        CheckConstraint("quantity IS NULL OR quantity > 0", name="quantity_positive"),
        CheckConstraint("quantity_owed >= 0", name="quantity_owed_non_negative"),
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
    medication_code: Mapped[str] = mapped_column(String(64))
    medication_display: Mapped[str] = mapped_column(String(300))
    # None only on a rejected prescription that lacked it; ml and doses may be fractional.
    quantity: Mapped[Decimal | None] = mapped_column(Numeric(12, 3))
    quantity_unit: Mapped[str | None] = mapped_column(String(50))
    dosage_text: Mapped[str | None] = mapped_column(Text)
    supply_duration_days: Mapped[int | None]
    repeats_allowed: Mapped[int] = mapped_column(default=0)
    cd_schedule: Mapped[int | None]
    quantity_words: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="active")
    # When this item was supplied (packed) on its issue. Items are supplied one by one: the
    # issue is dispensed when the last of them is, and each item's next repeat is due from
    # its own supply. None on items dispensed before items were tracked one by one (the
    # issue's dispensed_at stands for them).
    supplied_at: Mapped[datetime | None]
    # Units still owed to the patient after a short supply (an "owing"): they can be
    # ordered against this item, without a new prescription, until they are all supplied.
    quantity_owed: Mapped[int] = mapped_column(default=0, server_default="0")

    prescription: Mapped[Prescription] = relationship(back_populates="items")
    medicine: Mapped[Medicine | None] = relationship()


class ReviewAction(enum.StrEnum):
    VERIFIED = "verified"
    FIRST_CHECKED = "first_checked"  # clinical check done; a second pharmacist must confirm
    SECOND_CHECKED = "second_checked"
    REJECTED = "rejected"
    QUERIED = "queried"
    QUERY_ANSWERED = "query_answered"
    WITHDRAWN = "withdrawn"  # cancelled by a pharmacist after or instead of verifying


class PrescriptionReview(Base):
    """A pharmacist's decision on a prescription, with the warnings they overrode and why."""

    __tablename__ = "prescription_reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    prescription_id: Mapped[int] = mapped_column(ForeignKey("prescriptions.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    action: Mapped[ReviewAction] = mapped_column(str_enum(ReviewAction, "review_action"))
    reason: Mapped[str | None] = mapped_column(Text)
    # [{"rule": ..., "item": ..., "decision": ..., "reason": ...}] for each warning.
    warning_decisions: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prescription: Mapped[Prescription] = relationship(back_populates="reviews")
