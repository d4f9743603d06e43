"""Stock held in batches, and the append-only ledger of every change to it."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, TimestampMixin, str_enum, utcnow
from .catalog import Medicine


class BatchStatus(enum.StrEnum):
    AVAILABLE = "available"
    QUARANTINED = "quarantined"
    RECALLED = "recalled"
    EXPIRED = "expired"


class StockBatch(TimestampMixin, Base):
    """A lot of one medicine at one pharmacy. Quantities are in dispensing units."""

    __tablename__ = "stock_batches"
    __table_args__ = (
        UniqueConstraint("pharmacy_id", "medicine_id", "lot_number"),
        CheckConstraint("quantity_on_hand >= 0", name="on_hand_non_negative"),
        CheckConstraint("quantity_reserved >= 0", name="reserved_non_negative"),
        CheckConstraint("quantity_reserved <= quantity_on_hand", name="reserved_within_on_hand"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"))
    medicine_id: Mapped[int] = mapped_column(ForeignKey("medicines.id"), index=True)
    lot_number: Mapped[str] = mapped_column(String(64))
    expiry_date: Mapped[date] = mapped_column(index=True)
    quantity_on_hand: Mapped[int] = mapped_column(default=0)
    quantity_reserved: Mapped[int] = mapped_column(default=0)
    status: Mapped[BatchStatus] = mapped_column(
        str_enum(BatchStatus, "batch_status"), default=BatchStatus.AVAILABLE
    )
    location: Mapped[str | None] = mapped_column(String(50))  # shelf / fridge / CD cabinet
    supplier: Mapped[str | None] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(default=1)

    medicine: Mapped[Medicine] = relationship()
    movements: Mapped[list[StockMovement]] = relationship(back_populates="batch")

    __mapper_args__ = {"version_id_col": version}

    @property
    def quantity_available(self) -> int:
        return self.quantity_on_hand - self.quantity_reserved


class MovementKind(enum.StrEnum):
    RECEIVED = "received"
    RESERVED = "reserved"
    RELEASED = "released"
    PICKED = "picked"
    DISPENSED = "dispensed"
    RETURNED = "returned"
    WRITTEN_OFF = "written_off"
    QUARANTINED = "quarantined"
    RECALLED = "recalled"
    EXPIRED = "expired"
    COUNTED = "counted"


class StockMovement(Base):
    """One immutable ledger line. `on_hand_change` and `reserved_change` are signed deltas.

    The batch's cached quantities always equal the sum of its movements; rows are never
    updated or deleted (corrections are new rows).
    """

    __tablename__ = "stock_movements"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("stock_batches.id"), index=True)
    kind: Mapped[MovementKind] = mapped_column(str_enum(MovementKind, "movement_kind"))
    on_hand_change: Mapped[int] = mapped_column(default=0)
    reserved_change: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(100))  # PO, delivery note, order ref
    order_line_id: Mapped[int | None] = mapped_column(ForeignKey("order_lines.id"), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    batch: Mapped[StockBatch] = relationship(back_populates="movements")


@event.listens_for(StockMovement, "before_update")
@event.listens_for(StockMovement, "before_delete")
def _ledger_is_append_only(mapper: object, connection: object, target: StockMovement) -> None:
    raise PermissionError("stock movements are append-only; record a correcting movement")


class CDEntryKind(enum.StrEnum):
    RECEIPT = "receipt"
    SUPPLY = "supply"
    RETURN = "return"            # a patient's return, or an undelivered parcel back to stock
    DESTRUCTION = "destruction"
    CORRECTION = "correction"    # corrects an earlier entry, which stays as it was


class CDRegister(Base):
    """The controlled-drug register of one medicine (drug, strength, form) at one pharmacy.

    The row is the register's head: it is locked while an entry is added, so entries are
    numbered without gaps and the running balance is exact under concurrency.
    """

    __tablename__ = "cd_registers"
    __table_args__ = (
        UniqueConstraint("pharmacy_id", "medicine_id"),
        CheckConstraint("balance >= 0", name="balance_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"))
    medicine_id: Mapped[int] = mapped_column(ForeignKey("medicines.id"))
    balance: Mapped[int] = mapped_column(default=0)
    entry_count: Mapped[int] = mapped_column(default=0)

    medicine: Mapped[Medicine] = relationship()
    entries: Mapped[list[CDRegisterEntry]] = relationship(
        back_populates="register", order_by="CDRegisterEntry.sequence")


class CDRegisterEntry(Base):
    """One line of a controlled-drug register. Never edited or deleted."""

    __tablename__ = "cd_register_entries"
    __table_args__ = (
        UniqueConstraint("register_id", "sequence"),
        CheckConstraint("running_balance >= 0", name="running_balance_non_negative"),
        CheckConstraint("quantity <> 0", name="quantity_not_zero"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    register_id: Mapped[int] = mapped_column(ForeignKey("cd_registers.id"), index=True)
    sequence: Mapped[int]
    kind: Mapped[CDEntryKind] = mapped_column(str_enum(CDEntryKind, "cd_entry_kind"))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    quantity: Mapped[int]              # signed: receipts positive, supplies negative
    running_balance: Mapped[int]
    # Receipts: the supplier; supplies: the patient (and prescriber); as the law asks.
    counterparty: Mapped[str] = mapped_column(String(200))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    prescriber_id: Mapped[int | None] = mapped_column(ForeignKey("prescribers.id"))
    prescription_id: Mapped[int | None] = mapped_column(ForeignKey("prescriptions.id"))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("stock_batches.id"))
    reference: Mapped[str | None] = mapped_column(String(100))  # invoice / delivery note
    entered_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Whether the collector's or recipient's identity was checked (supplies).
    id_checked: Mapped[bool | None]
    corrects_entry_id: Mapped[int | None] = mapped_column(ForeignKey("cd_register_entries.id"))
    note: Mapped[str | None] = mapped_column(Text)

    register: Mapped[CDRegister] = relationship(back_populates="entries")


@event.listens_for(CDRegisterEntry, "before_update")
@event.listens_for(CDRegisterEntry, "before_delete")
def _cd_register_is_append_only(mapper: object, connection: object,
                                target: CDRegisterEntry) -> None:
    raise PermissionError("controlled-drug register entries are never edited; add a correction")
