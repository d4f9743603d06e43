"""Forecasting jobs."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..models import Pharmacy
from ..services import forecasting


def refresh_reorder_suggestions() -> int:
    """RQ entry point (nightly, forecasting queue): new forecasts and reorder suggestions.

    Safe to rerun: each run supersedes the open suggestions it replaces.

    Returns:
        How many suggestions were stored across pharmacies.
    """
    cfg = current_app.config
    settings = forecasting.PolicySettings(
        lead_time_days=int(cfg.get("REORDER_LEAD_TIME_DAYS", 2)),
        review_days=int(cfg.get("REORDER_REVIEW_DAYS", 7)),
        service_level=float(cfg.get("REORDER_SERVICE_LEVEL", 0.95)))
    pharmacy_ids = list(db.session.scalars(select(Pharmacy.id).order_by(Pharmacy.id)))
    stored = 0
    from ..metrics import FORECAST_SECONDS

    for pharmacy_id in pharmacy_ids:
        with FORECAST_SECONDS.time():
            stored += forecasting.refresh_suggestions(db.session, pharmacy_id,
                                                      settings=settings)
        db.session.commit()
    return stored
