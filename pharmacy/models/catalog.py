"""The formulary: medicines, their historic dm+d codes, and interaction rules."""

from __future__ import annotations

import enum
from datetime import date
from decimal import Decimal

from sqlalchemy import CheckConstraint, ForeignKey, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, TimestampMixin, str_enum


class Medicine(TimestampMixin, Base):
    """One dm+d VMP (or an over-the-counter product) the pharmacy can supply."""

    __tablename__ = "medicines"
    __table_args__ = (
        CheckConstraint("cd_schedule IS NULL OR cd_schedule BETWEEN 1 AND 5", name="cd_schedule"),
        CheckConstraint("pack_size IS NULL OR pack_size > 0", name="pack_size_positive"),
        CheckConstraint("unit_price_minor >= 0", name="price_non_negative"),
        CheckConstraint(
            "max_daily_dose_mg IS NULL OR max_daily_dose_mg > 0", name="max_dose_positive"
        ),
        CheckConstraint(
            "reorder_service_level IS NULL OR "
            "(reorder_service_level >= 0.5 AND reorder_service_level <= 0.999)",
            name="reorder_service_level_range",
        ),
        CheckConstraint(
            "minimum_order_quantity IS NULL OR minimum_order_quantity > 0",
            name="minimum_order_quantity_positive",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)  # dm+d VPID (SNOMED CT id)
    code_system: Mapped[str] = mapped_column(String(100), default="http://snomed.info/sct")
    name: Mapped[str] = mapped_column(String(300), index=True)
    ingredient: Mapped[str] = mapped_column(String(200))  # "+"-joined for combinations
    strength: Mapped[str | None] = mapped_column(String(100))
    form: Mapped[str] = mapped_column(String(100))
    atc: Mapped[str | None] = mapped_column(String(8), index=True)
    # UK Misuse of Drugs Regulations 2001 schedule (1-5); None = not controlled.
    cd_schedule: Mapped[int | None]
    us_dea_schedule: Mapped[str | None] = mapped_column(String(4))
    cold_chain: Mapped[bool] = mapped_column(default=False)
    prescription_only: Mapped[bool] = mapped_column(default=True)
    pack_size: Mapped[int | None]
    pack_unit: Mapped[str | None] = mapped_column(String(50))
    # Typical adult maximum daily dose; some are fractional (2.5 mg).
    max_daily_dose_mg: Mapped[Decimal | None] = mapped_column(Numeric(10, 3))
    # Price of one pack (OTC sale price; prescription items are priced by the charge rule).
    unit_price_minor: Mapped[int] = mapped_column(default=0)
    is_active: Mapped[bool] = mapped_column(default=True)
    source: Mapped[str | None] = mapped_column(Text)
    # Reorder policy for this medicine: the cycle service level its safety stock aims at
    # (None: the pharmacy's REORDER_SERVICE_LEVEL) and the smallest order the supplier
    # takes, in units (None: any whole number of packs).
    reorder_service_level: Mapped[float | None]
    minimum_order_quantity: Mapped[int | None]

    previous_codes: Mapped[list[MedicineCodeHistory]] = relationship(back_populates="medicine")

    @property
    def is_controlled(self) -> bool:
        return self.cd_schedule is not None


class MedicineCodeHistory(Base):
    """An earlier VPID of a medicine, for matching prescriptions written with old codes."""

    __tablename__ = "medicine_code_history"
    # The same old code can have several validity periods.
    __table_args__ = (UniqueConstraint("previous_code", "valid_from"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    medicine_id: Mapped[int] = mapped_column(ForeignKey("medicines.id"), index=True)
    previous_code: Mapped[str] = mapped_column(String(20), index=True)
    valid_from: Mapped[date | None]
    valid_to: Mapped[date | None]

    medicine: Mapped[Medicine] = relationship(back_populates="previous_codes")


class InteractionSeverity(enum.StrEnum):
    CONTRAINDICATED = "contraindicated"
    MAJOR = "major"
    MODERATE = "moderate"
    MINOR = "minor"


class InteractionRule(TimestampMixin, Base):
    """A drug-drug interaction between two ingredients or ATC class prefixes."""

    __tablename__ = "interaction_rules"
    __table_args__ = (UniqueConstraint("substance_a", "substance_b"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    substance_a: Mapped[str] = mapped_column(String(100))
    substance_b: Mapped[str] = mapped_column(String(100))
    severity: Mapped[InteractionSeverity] = mapped_column(
        str_enum(InteractionSeverity, "interaction_severity")
    )
    effect: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
