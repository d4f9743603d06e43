"""Figures for each role's landing page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import (
    BatchStatus,
    DeliveryRoute,
    DeliveryStop,
    DeliveryWave,
    Order,
    PatientProfile,
    Prescription,
    PrescriptionStatus,
    Role,
    StockBatch,
    User,
)
from ..models.base import utcnow


@dataclass(frozen=True)
class PatientSummary:
    patient: PatientProfile | None
    recent_orders: list[Order] = field(default_factory=list)
    active_prescriptions: int = 0


def patient_summary(session: Session, user: User) -> PatientSummary:
    patient = user.patient
    if patient is None:
        return PatientSummary(None)
    orders = session.scalars(
        select(Order).where(Order.patient_id == patient.id)
        .order_by(Order.created_at.desc(), Order.id.desc()).limit(5)
    ).all()
    active = session.scalar(
        select(func.count(Prescription.id)).where(
            Prescription.patient_id == patient.id,
            Prescription.status.in_([PrescriptionStatus.VERIFIED, PrescriptionStatus.DISPENSED]),
        )
    ) or 0
    return PatientSummary(patient, list(orders), active)


@dataclass(frozen=True)
class PharmacistSummary:
    awaiting_verification: int
    queried: int
    near_expiry_batches: int
    quarantined_batches: int


def pharmacist_summary(session: Session, *, today: date | None = None,
                       near_expiry_days: int = 30) -> PharmacistSummary:
    today = today or utcnow().date()

    def count_rx(*statuses: PrescriptionStatus) -> int:
        return session.scalar(
            select(func.count(Prescription.id)).where(Prescription.status.in_(statuses))
        ) or 0

    near = session.scalar(
        select(func.count(StockBatch.id)).where(
            StockBatch.status == BatchStatus.AVAILABLE,
            StockBatch.quantity_on_hand > 0,
            StockBatch.expiry_date <= today + timedelta(days=near_expiry_days),
        )
    ) or 0
    quarantined = session.scalar(
        select(func.count(StockBatch.id)).where(
            StockBatch.status.in_([BatchStatus.QUARANTINED, BatchStatus.RECALLED])
        )
    ) or 0
    return PharmacistSummary(
        awaiting_verification=count_rx(PrescriptionStatus.AWAITING_VERIFICATION,
                                       PrescriptionStatus.AWAITING_SECOND_CHECK),
        queried=count_rx(PrescriptionStatus.QUERIED),
        near_expiry_batches=near,
        quarantined_batches=quarantined,
    )


@dataclass(frozen=True)
class CourierSummary:
    routes_today: int
    stops_today: int


def courier_summary(session: Session, user: User) -> CourierSummary:
    if user.courier is None:
        return CourierSummary(0, 0)
    now = utcnow()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    route_ids = select(DeliveryRoute.id).join(DeliveryWave).where(
        DeliveryRoute.courier_id == user.courier.id,
        DeliveryWave.window_start >= start, DeliveryWave.window_start < end,
    )
    routes = session.scalar(select(func.count()).select_from(route_ids.subquery())) or 0
    stops = session.scalar(
        select(func.count(DeliveryStop.id)).where(DeliveryStop.route_id.in_(route_ids))
    ) or 0
    return CourierSummary(routes, stops)


@dataclass(frozen=True)
class AdminSummary:
    users_by_role: dict[str, int]
    orders: int


def admin_summary(session: Session) -> AdminSummary:
    rows = session.execute(select(User.role, func.count(User.id)).group_by(User.role)).all()
    by_role = {role.value: 0 for role in Role}
    by_role.update({role.value: n for role, n in rows})
    orders = session.scalar(select(func.count(Order.id))) or 0
    return AdminSummary(by_role, orders)
