"""Orders, their lines, and card payments."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, JSONType, TimestampMixin, str_enum, utcnow

if TYPE_CHECKING:
    from .catalog import Medicine


class OrderStatus(enum.StrEnum):
    PLACED = "placed"
    AWAITING_VERIFICATION = "awaiting_verification"
    READY_TO_PICK = "ready_to_pick"
    PACKED = "packed"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    FAILED = "failed"
    RETURNED = "returned"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"


class Order(TimestampMixin, Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("subtotal_minor >= 0", name="subtotal_non_negative"),
        CheckConstraint("prescription_charge_minor >= 0", name="charge_non_negative"),
        CheckConstraint("delivery_fee_minor >= 0", name="delivery_fee_non_negative"),
        CheckConstraint(
            "total_minor = subtotal_minor + prescription_charge_minor + delivery_fee_minor",
            name="total_is_sum",
        ),
        CheckConstraint(
            "delivery_window_end IS NULL OR delivery_window_end > delivery_window_start",
            name="window_ordered",
        ),
        UniqueConstraint("patient_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"), index=True)
    address_id: Mapped[int | None] = mapped_column(ForeignKey("addresses.id"))
    status: Mapped[OrderStatus] = mapped_column(
        str_enum(OrderStatus, "order_status"), default=OrderStatus.PLACED, index=True
    )
    # Client-supplied Idempotency-Key (unique per patient) and a hash of the request body.
    idempotency_key: Mapped[str | None] = mapped_column(String(100))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    delivery_window_start: Mapped[datetime | None]
    delivery_window_end: Mapped[datetime | None]
    currency: Mapped[str] = mapped_column(String(3), default="GBP")
    subtotal_minor: Mapped[int] = mapped_column(default=0)
    prescription_charge_minor: Mapped[int] = mapped_column(default=0)
    delivery_fee_minor: Mapped[int] = mapped_column(default=0)
    total_minor: Mapped[int] = mapped_column(default=0)
    placed_at: Mapped[datetime | None]
    delivery_slot_id: Mapped[int | None] = mapped_column(ForeignKey("delivery_slots.id"),
                                                        index=True)
    # Unpaid orders give their reserved stock back after this time.
    reserved_until: Mapped[datetime | None]
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # A parcel already out of the door that must not be handed over (its prescription was
    # withdrawn): the courier brings it back and the pharmacy refunds it. The recall is
    # closed when the parcel is received back, or when a pharmacist has followed up a
    # delivery made before the recall reached the courier.
    recalled_at: Mapped[datetime | None]
    recall_reason: Mapped[str | None] = mapped_column(Text)
    recall_closed_at: Mapped[datetime | None]
    needs_fridge: Mapped[bool] = mapped_column(default=False)
    parcel_count: Mapped[int] = mapped_column(default=1)
    version: Mapped[int] = mapped_column(default=1)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", cascade="all, delete-orphan"
    )
    payments: Mapped[list[Payment]] = relationship(back_populates="order")

    __mapper_args__ = {"version_id_col": version}


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price_minor >= 0", name="unit_price_non_negative"),
        CheckConstraint("line_total_minor >= 0", name="line_total_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    medicine_id: Mapped[int] = mapped_column(ForeignKey("medicines.id"))
    prescription_item_id: Mapped[int | None] = mapped_column(
        ForeignKey("prescription_items.id"), index=True
    )
    quantity: Mapped[int]
    unit_price_minor: Mapped[int]
    line_total_minor: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), default="pending")
    # Units actually supplied (partial supply refunds the rest); None until packed.
    quantity_supplied: Mapped[int | None]
    is_prescription_item: Mapped[bool] = mapped_column(default=False)
    # The line supplies units owed on an item supplied short before (not a first supply).
    for_owing: Mapped[bool] = mapped_column(default=False, server_default=false())

    order: Mapped[Order] = relationship(back_populates="lines")
    medicine: Mapped[Medicine] = relationship()
    allocations: Mapped[list[StockAllocation]] = relationship(back_populates="order_line")


class AllocationStatus(enum.StrEnum):
    RESERVED = "reserved"
    PICKED = "picked"
    RELEASED = "released"


class StockAllocation(Base):
    """Units of one batch held for one order line (first-expiry-first-out)."""

    __tablename__ = "stock_allocations"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    order_line_id: Mapped[int] = mapped_column(ForeignKey("order_lines.id"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("stock_batches.id"), index=True)
    quantity: Mapped[int]
    status: Mapped[AllocationStatus] = mapped_column(
        str_enum(AllocationStatus, "allocation_status"), default=AllocationStatus.RESERVED
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    order_line: Mapped[OrderLine] = relationship(back_populates="allocations")


class PaymentStatus(enum.StrEnum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_ACTION = "requires_action"
    AUTHORISED = "authorised"  # requires_capture at Stripe
    CAPTURED = "captured"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    FAILED = "failed"


class Payment(TimestampMixin, Base):
    __tablename__ = "payments"
    __table_args__ = (
        UniqueConstraint("provider", "provider_payment_id"),
        CheckConstraint("amount_minor >= 0", name="amount_non_negative"),
        CheckConstraint(
            "amount_captured_minor >= 0 AND amount_captured_minor <= amount_minor",
            name="captured_within_amount",
        ),
        CheckConstraint(
            "amount_refunded_minor >= 0 AND amount_refunded_minor <= amount_captured_minor",
            name="refunded_within_captured",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    provider: Mapped[str] = mapped_column(String(20), default="stripe")
    provider_payment_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[PaymentStatus] = mapped_column(str_enum(PaymentStatus, "payment_status"))
    currency: Mapped[str] = mapped_column(String(3), default="GBP")
    amount_minor: Mapped[int]
    amount_captured_minor: Mapped[int] = mapped_column(default=0)
    amount_refunded_minor: Mapped[int] = mapped_column(default=0)
    # Stripe's decline or error message, shown to the patient in plain words.
    last_error: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(default=1)

    order: Mapped[Order] = relationship(back_populates="payments")

    __mapper_args__ = {"version_id_col": version}


class WebhookEvent(Base):
    """A payment provider's event, stored once by its id: replays are recognised and ignored."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("provider", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(20), default="stripe")
    event_id: Mapped[str] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(100))
    # The provider object's own creation time, to ignore events that arrive out of order.
    event_created_at: Mapped[datetime | None]
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(200))


class DeliverySlot(Base):
    """A delivery window patients can book until its cut-off, with van capacity."""

    __tablename__ = "delivery_slots"
    __table_args__ = (
        UniqueConstraint("pharmacy_id", "starts_at"),
        CheckConstraint("ends_at > starts_at", name="ordered"),
        CheckConstraint("cutoff_at <= starts_at", name="cutoff_before_start"),
        CheckConstraint("booked >= 0 AND booked <= capacity", name="booked_within_capacity"),
        CheckConstraint("booked_fridge >= 0 AND booked_fridge <= fridge_capacity",
                        name="fridge_within_capacity"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    cutoff_at: Mapped[datetime]
    capacity: Mapped[int]            # orders all vans on shift can take in the window
    fridge_capacity: Mapped[int]     # of which on fridge vans
    booked: Mapped[int] = mapped_column(default=0)
    booked_fridge: Mapped[int] = mapped_column(default=0)
