"""Stock held in batches, and the append-only ledger of every change to it."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, JSONType, TimestampMixin, str_enum, utcnow
from .catalog import Medicine

if TYPE_CHECKING:
    from .users import User


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
    MOVED = "moved"            # to another location; no quantity changes


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


class LostDemand(Base):
    """Units a patient asked for and could not have because there was not enough stock.

    Sales alone would teach the forecast that demand stops when the shelf is empty, so
    refused checkouts are kept and added back (once per patient, medicine and day) as
    unmet demand. Rows are facts about requests and are never changed.
    """

    __tablename__ = "lost_demand"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        Index("ix_lost_demand_pharmacy_occurred", "pharmacy_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"))
    medicine_id: Mapped[int] = mapped_column(ForeignKey("medicines.id"))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    quantity: Mapped[int]                      # units asked for
    available: Mapped[int]                     # units that could have been supplied
    reason: Mapped[str] = mapped_column(String(40), default="out_of_stock")
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)


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
    entered_by: Mapped[User | None] = relationship(foreign_keys=[entered_by_id])


@event.listens_for(CDRegisterEntry, "before_update")
@event.listens_for(CDRegisterEntry, "before_delete")
def _cd_register_is_append_only(mapper: object, connection: object,
                                target: CDRegisterEntry) -> None:
    raise PermissionError("controlled-drug register entries are never edited; add a correction")


class PurchaseOrderStatus(enum.StrEnum):
    DRAFT = "draft"
    SENT = "sent"
    RECEIVED = "received"
    CANCELLED = "cancelled"


class PurchaseOrder(TimestampMixin, Base):
    """An order to a wholesaler, usually made from accepted reorder suggestions."""

    __tablename__ = "purchase_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"), index=True)
    reference: Mapped[str] = mapped_column(String(30), unique=True)
    supplier: Mapped[str] = mapped_column(String(200))
    status: Mapped[PurchaseOrderStatus] = mapped_column(
        str_enum(PurchaseOrderStatus, "purchase_order_status"), default=PurchaseOrderStatus.DRAFT)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    lines: Mapped[list[PurchaseOrderLine]] = relationship(back_populates="purchase_order",
                                                          cascade="all, delete-orphan")


class PurchaseOrderLine(Base):
    __tablename__ = "purchase_order_lines"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),
                      UniqueConstraint("purchase_order_id", "medicine_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    purchase_order_id: Mapped[int] = mapped_column(ForeignKey("purchase_orders.id"), index=True)
    medicine_id: Mapped[int] = mapped_column(ForeignKey("medicines.id"))
    quantity: Mapped[int]             # units (whole packs)
    quantity_received: Mapped[int] = mapped_column(default=0)

    purchase_order: Mapped[PurchaseOrder] = relationship(back_populates="lines")
    medicine: Mapped[Medicine] = relationship()


class SuggestionStatus(enum.StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    DISMISSED = "dismissed"
    SUPERSEDED = "superseded"


class ReorderSuggestion(Base):
    """What the nightly forecast suggests ordering for one medicine, and why."""

    __tablename__ = "reorder_suggestions"
    __table_args__ = (
        CheckConstraint("suggested_quantity >= 0", name="quantity_non_negative"),
        Index("ix_reorder_suggestions_open", "pharmacy_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"))
    medicine_id: Mapped[int] = mapped_column(ForeignKey("medicines.id"))
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # As of this time the inputs (stock, open purchase orders) were read.
    inputs_as_of: Mapped[datetime]
    demand_class: Mapped[str | None] = mapped_column(String(20))
    mean_protection: Mapped[float]       # forecast units over lead time + review period
    sigma_protection: Mapped[float]
    order_up_to: Mapped[int]
    inventory_position: Mapped[int]
    suggested_quantity: Mapped[int]
    # Recent history and the forecast with its 80%/95% bands, for the chart.
    chart: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[SuggestionStatus] = mapped_column(
        str_enum(SuggestionStatus, "suggestion_status"), default=SuggestionStatus.OPEN)
    purchase_order_id: Mapped[int | None] = mapped_column(ForeignKey("purchase_orders.id"))

    medicine: Mapped[Medicine] = relationship()
