"""Delivery jobs: planning a wave, closing waves at their cut-off."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from ..errors import DomainError
from ..extensions import db, release_session
from ..models import DeliveryAttempt, DeliverySlot, DeliveryWave, WaveStatus
from ..models.base import utcnow
from ..services import delivery

logger = logging.getLogger(__name__)


def plan_wave(wave_id: int, plan_version: int) -> int | None:
    """Solve and store one wave's plan. Idempotent: a wave already planned is left alone.

    No database transaction or connection is held while the solver runs.
    """
    import routing

    wave = db.session.get(DeliveryWave, wave_id)
    if wave is None or wave.status is not WaveStatus.PLANNING or wave.plan_version != plan_version:
        db.session.rollback()
        return None
    try:
        problem, index = delivery.build_problem(db.session, wave_id)
    except DomainError as err:
        _failed(wave_id, plan_version, err.detail)
        return None
    db.session.rollback()
    release_session()  # give the connection back during the solve
    seconds = float(current_app.config.get("ROUTING_TIME_LIMIT_S", 20))
    from ..metrics import SOLVER_DISTANCE, SOLVER_SECONDS

    with SOLVER_SECONDS.time():
        plan = routing.solve(problem, time_limit=timedelta(seconds=seconds), seed=0, workers=1)
    SOLVER_DISTANCE.set(plan.distance_m)
    try:
        stored = delivery.store_plan(db.session, index, plan)
    except DomainError as err:
        _failed(wave_id, plan_version, err.detail)
        return None
    db.session.commit()
    logger.info("wave %s: %s (%d routes, %d unserved)", wave_id,
                "stored" if stored else "stale, not stored", len(plan.routes),
                len(plan.unserved))
    return wave_id if stored else None


def _failed(wave_id: int, plan_version: int, reason: str) -> None:
    db.session.rollback()
    delivery.planning_failed(db.session, wave_id, plan_version, reason)
    db.session.commit()
    logger.warning("wave %s: no plan (%s); its parcels were offered other slots", wave_id,
                   reason)
    return None


def close_due_waves() -> int:
    """Every few minutes: close the slots whose cut-off has passed (idempotent)."""
    now = utcnow()
    slots = db.session.scalars(select(DeliverySlot).where(
        DeliverySlot.cutoff_at <= now, DeliverySlot.starts_at > now - timedelta(hours=4))
        .order_by(DeliverySlot.id)).all()
    closed = 0
    for slot in slots:
        delivery.close_wave(db.session, slot, now=now)
        closed += 1
    db.session.commit()
    from .outbox import relay_outbox

    relay_outbox()
    return closed


def order_packed(order_id: int) -> int | None:
    """Tell the patient their order is packed and will go out in its window (idempotent)."""
    from ..models import Order, PatientProfile
    from ..services import notify

    order = db.session.get(Order, order_id)
    if order is None:
        return None
    patient = db.session.get(PatientProfile, order.patient_id)
    if patient is not None:
        notify.create_notification(db.session, kind="order.packed", patient=patient,
                                   dedupe_key=f"order-packed:{order.id}",
                                   given_name=patient.given_name, reference=order.reference)
    db.session.commit()
    return order_id


def expire_delivery_photos() -> int:
    """RQ entry point (nightly): delete proof-of-delivery photos past their retention, and
    any stored photo no record names (an upload whose record was never committed). Safe to
    run twice: the records are cleared first, then the files."""
    from ..services.photos import PhotoStore

    config = current_app.config
    store = PhotoStore.from_settings(config, current_app.instance_path)
    names = delivery.expire_delivery_photos(
        db.session, retention=timedelta(days=int(config["DELIVERY_PHOTO_RETENTION_DAYS"])))
    db.session.commit()
    for name in names:
        store.discard(name)
    referenced = {path for path in db.session.scalars(select(DeliveryAttempt.photo_path).where(
        DeliveryAttempt.photo_path.is_not(None))) if path is not None}
    db.session.rollback()
    orphans = store.discard_unreferenced(referenced, older_than=timedelta(days=1),
                                         now=utcnow())
    if names or orphans:
        logger.info("deleted %d expired and %d unreferenced delivery photos", len(names),
                    orphans)
    return len(names) + orphans
