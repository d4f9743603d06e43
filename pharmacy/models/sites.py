"""Pharmacies (dispensing sites and delivery depots) and their vans."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, JSONType, TimestampMixin


class Pharmacy(TimestampMixin, Base):
    __tablename__ = "pharmacies"
    __table_args__ = (
        CheckConstraint("latitude BETWEEN -90 AND 90", name="lat_range"),
        CheckConstraint("longitude BETWEEN -180 AND 180", name="lon_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    ods_code: Mapped[str] = mapped_column(String(16), unique=True)
    line1: Mapped[str] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    postcode: Mapped[str] = mapped_column(String(16))
    phone: Mapped[str | None] = mapped_column(String(32))
    latitude: Mapped[float]
    longitude: Mapped[float]
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/London")
    is_depot: Mapped[bool] = mapped_column(default=True)
    # {"mon": [["09:00", "18:00"]], ..., "sun": []} in local time.
    opening_hours: Mapped[dict[str, list[list[str]]]] = mapped_column(JSONType, default=dict)

    vehicles: Mapped[list[Vehicle]] = relationship(back_populates="pharmacy")


class Vehicle(TimestampMixin, Base):
    __tablename__ = "vehicles"
    __table_args__ = (
        CheckConstraint("capacity_parcels > 0", name="capacity_parcels_positive"),
        CheckConstraint("capacity_volume_l > 0", name="capacity_volume_positive"),
        CheckConstraint("cost_per_km_minor >= 0", name="cost_per_km_non_negative"),
        CheckConstraint("cost_per_hour_minor >= 0", name="cost_per_hour_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"), index=True)
    registration: Mapped[str] = mapped_column(String(16), unique=True)
    capacity_parcels: Mapped[int]
    capacity_volume_l: Mapped[int]
    has_fridge: Mapped[bool] = mapped_column(default=False)
    cost_per_km_minor: Mapped[int] = mapped_column(default=0)
    cost_per_hour_minor: Mapped[int] = mapped_column(default=0)
    is_active: Mapped[bool] = mapped_column(default=True)

    pharmacy: Mapped[Pharmacy] = relationship(back_populates="vehicles")
