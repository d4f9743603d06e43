"""Demand forecasting and reorder policy: a pure library (no web app, no database).

Frames are long-format with the statsforecast column names `unique_id`, `ds`, `y`.
Importing this package is cheap: statsforecast is only imported when a forecast runs.
"""

from inventory.classify import DemandClass, classify_demand
from inventory.forecast import FORECAST_COLUMNS, forecast_demand
from inventory.history import (
    HistoryError,
    fill_gaps,
    infer_freq,
    prepare_history,
    validate_history,
)
from inventory.policy import (
    order_quantity,
    order_up_to_level,
    protection_demand,
    safety_factor_for_fill_rate,
    safety_stock,
    simulate_periodic_review,
)

__all__ = [
    "FORECAST_COLUMNS",
    "DemandClass",
    "HistoryError",
    "classify_demand",
    "fill_gaps",
    "forecast_demand",
    "infer_freq",
    "order_quantity",
    "order_up_to_level",
    "protection_demand",
    "safety_factor_for_fill_rate",
    "safety_stock",
    "simulate_periodic_review",
    "prepare_history",
    "validate_history",
]
