"""Orders, their lines, and card payments."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, TimestampMixin, str_enum

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
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(20), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"), index=True)
    address_id: Mapped[int | None] = mapped_column(ForeignKey("addresses.id"))
    status: Mapped[OrderStatus] = mapped_column(
        str_enum(OrderStatus, "order_status"), default=OrderStatus.PLACED, index=True
    )
    # Client-supplied Idempotency-Key and a hash of the request body it came with.
    idempotency_key: Mapped[str | None] = mapped_column(String(100), unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    delivery_window_start: Mapped[datetime | None]
    delivery_window_end: Mapped[datetime | None]
    currency: Mapped[str] = mapped_column(String(3), default="GBP")
    subtotal_minor: Mapped[int] = mapped_column(default=0)
    prescription_charge_minor: Mapped[int] = mapped_column(default=0)
    delivery_fee_minor: Mapped[int] = mapped_column(default=0)
    total_minor: Mapped[int] = mapped_column(default=0)
    placed_at: Mapped[datetime | None]
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
        ForeignKey("prescription_items.id")
    )
    quantity: Mapped[int]
    unit_price_minor: Mapped[int]
    line_total_minor: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), default="pending")

    order: Mapped[Order] = relationship(back_populates="lines")
    medicine: Mapped[Medicine] = relationship()


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
    version: Mapped[int] = mapped_column(default=1)

    order: Mapped[Order] = relationship(back_populates="payments")

    __mapper_args__ = {"version_id_col": version}
