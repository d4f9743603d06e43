"""Delivery waves (one per window and depot), their routes, stops and attempts."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, JSONType, TimestampMixin, str_enum, utcnow


class WaveStatus(enum.StrEnum):
    OPEN = "open"
    PLANNING = "planning"
    PLANNED = "planned"
    DISPATCHED = "dispatched"
    COMPLETED = "completed"


class DeliveryWave(TimestampMixin, Base):
    __tablename__ = "delivery_waves"
    __table_args__ = (
        UniqueConstraint("pharmacy_id", "window_start"),
        CheckConstraint("window_end > window_start", name="window_ordered"),
        CheckConstraint("cutoff_at <= window_start", name="cutoff_before_window"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    cutoff_at: Mapped[datetime]
    status: Mapped[WaveStatus] = mapped_column(
        str_enum(WaveStatus, "wave_status"), default=WaveStatus.OPEN
    )
    planned_at: Mapped[datetime | None]
    plan_version: Mapped[int] = mapped_column(default=0)
    planning_started_at: Mapped[datetime | None]
    # Objective of the stored plan, for the planner and the metrics.
    planned_distance_m: Mapped[int | None]
    planning_engine: Mapped[str | None] = mapped_column(String(40))

    routes: Mapped[list[DeliveryRoute]] = relationship(back_populates="wave")


class DeliveryRoute(TimestampMixin, Base):
    __tablename__ = "delivery_routes"
    __table_args__ = (
        UniqueConstraint("wave_id", "vehicle_id"),
        CheckConstraint("planned_distance_m >= 0", name="distance_non_negative"),
        CheckConstraint("planned_duration_s >= 0", name="duration_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    wave_id: Mapped[int] = mapped_column(ForeignKey("delivery_waves.id"), index=True)
    vehicle_id: Mapped[int] = mapped_column(ForeignKey("vehicles.id"))
    courier_id: Mapped[int | None] = mapped_column(ForeignKey("couriers.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="planned")
    planned_distance_m: Mapped[int] = mapped_column(default=0)
    planned_duration_s: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    wave: Mapped[DeliveryWave] = relationship(back_populates="routes")
    stops: Mapped[list[DeliveryStop]] = relationship(
        back_populates="route", order_by="DeliveryStop.sequence"
    )


class StopStatus(enum.StrEnum):
    PENDING = "pending"
    ARRIVED = "arrived"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNSERVED = "unserved"


class DeliveryStop(TimestampMixin, Base):
    __tablename__ = "delivery_stops"
    __table_args__ = (
        UniqueConstraint("wave_id", "order_id"),
        CheckConstraint("sequence IS NULL OR sequence >= 0", name="sequence_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    wave_id: Mapped[int] = mapped_column(ForeignKey("delivery_waves.id"), index=True)
    route_id: Mapped[int | None] = mapped_column(ForeignKey("delivery_routes.id"), index=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    sequence: Mapped[int | None]
    planned_arrival: Mapped[datetime | None]
    eta: Mapped[datetime | None]
    status: Mapped[StopStatus] = mapped_column(
        str_enum(StopStatus, "stop_status"), default=StopStatus.PENDING
    )
    unserved_reason: Mapped[str | None] = mapped_column(Text)
    arrived_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    route: Mapped[DeliveryRoute | None] = relationship(back_populates="stops")
    attempts: Mapped[list[DeliveryAttempt]] = relationship(back_populates="stop")


class AttemptOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"


class DeliveryAttempt(Base):
    """What the courier recorded at the door. Idempotent on the phone's client action id."""

    __tablename__ = "delivery_attempts"
    __table_args__ = (
        CheckConstraint(
            "outcome <> 'failed' OR failure_reason IS NOT NULL", name="failure_has_reason"
        ),
        CheckConstraint(
            "outcome <> 'delivered' OR recipient_name IS NOT NULL", name="delivery_has_recipient"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    stop_id: Mapped[int] = mapped_column(ForeignKey("delivery_stops.id"), index=True)
    courier_id: Mapped[int] = mapped_column(ForeignKey("couriers.id"))
    client_action_id: Mapped[str] = mapped_column(String(64), unique=True)
    outcome: Mapped[AttemptOutcome] = mapped_column(str_enum(AttemptOutcome, "attempt_outcome"))
    failure_reason: Mapped[str | None] = mapped_column(String(32))
    recipient_name: Mapped[str | None] = mapped_column(String(200))
    id_checked: Mapped[bool] = mapped_column(default=False)
    signature_svg: Mapped[str | None] = mapped_column(Text)
    photo_path: Mapped[str | None] = mapped_column(String(300))
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)

    stop: Mapped[DeliveryStop] = relationship(back_populates="attempts")


class OutboxMessage(Base):
    """A job to enqueue, written in the same transaction as the change that calls for it.

    A relay enqueues pending rows after commit; if Redis is down they simply wait, and the
    reconciler (or the next relay) sends them later. The RQ job id is derived from the row,
    so sending twice never runs a job twice at once.
    """

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    # A business key: one message per wave plan, per stop event ("plan-wave:12:v1").
    key: Mapped[str] = mapped_column(String(120), unique=True)
    queue: Mapped[str] = mapped_column(String(40))
    function: Mapped[str] = mapped_column(String(120))  # dotted path of the job function
    args: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    job_timeout_s: Mapped[int] = mapped_column(default=300)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    completed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
