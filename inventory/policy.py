"""Periodic-review reorder policy and the inventory simulation used to evaluate it.

Pure numpy: the app turns these numbers into suggestions (pharmacy/services/forecasting.py).

Conventions: time is in forecast periods (days, weeks or months). Every `review_period`
periods the pharmacy raises the inventory position (on hand + on order) to an order-up-to
level S. An order placed at the end of period t can serve demand from period
t + lead_time + 1 on (lead time 0: it arrives before the next period's demand). Unmet
demand is lost, as in a pharmacy whose patient goes elsewhere.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

_STANDARD_NORMAL = NormalDist()


def safety_factor(service_level: float) -> float:
    """z such that P(Z <= z) = service_level for a standard normal (cycle service level).

    Raises:
        ValueError: service_level not strictly between 0 and 1.
    """
    if not 0.0 < service_level < 1.0:
        raise ValueError("service_level must be strictly between 0 and 1")
    return _STANDARD_NORMAL.inv_cdf(service_level)


def normal_loss(z: float) -> float:
    """Standard normal loss function G(z) = E[(Z - z)+]: expected shortage per unit sigma."""
    return _STANDARD_NORMAL.pdf(z) - z * (1.0 - _STANDARD_NORMAL.cdf(z))


def safety_factor_for_fill_rate(
    fill_rate: float, demand_per_review: float, sigma_protection: float
) -> float:
    """Smallest z whose expected shortage per cycle leaves the given fill rate.

    The fill rate (share of demand served from stock) of an order-up-to policy with normal
    demand over the protection period is 1 - sigma * G(z) / demand_per_review.

    Args:
        fill_rate: target share of demand served, in (0, 1).
        demand_per_review: expected demand in one review period (> 0).
        sigma_protection: standard deviation of demand over lead time + review period.
    """
    if not 0.0 < fill_rate < 1.0:
        raise ValueError("fill_rate must be strictly between 0 and 1")
    if demand_per_review <= 0 or sigma_protection <= 0:
        return 0.0
    target = (1.0 - fill_rate) * demand_per_review / sigma_protection
    lo, hi = -5.0, 8.0
    if normal_loss(lo) <= target:
        return lo
    for _ in range(80):  # bisection: G is strictly decreasing
        mid = (lo + hi) / 2
        if normal_loss(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


_Z_GRID = np.linspace(-4.0, 6.0, 10_001)
_LOSS_GRID = np.array([normal_loss(float(z)) for z in _Z_GRID])  # strictly decreasing


def safety_factors_for_fill_rate(
    fill_rate: float, demand_per_review: np.ndarray, sigma_protection: np.ndarray
) -> np.ndarray:
    """Vectorised `safety_factor_for_fill_rate` (table inversion, z to within 0.001).

    Elements without demand or without uncertainty get z = 0.
    """
    if not 0.0 < fill_rate < 1.0:
        raise ValueError("fill_rate must be strictly between 0 and 1")
    demand = np.asarray(demand_per_review, dtype=float)
    sigma = np.asarray(sigma_protection, dtype=float)
    valid = (demand > 0) & (sigma > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        target = np.where(valid, (1.0 - fill_rate) * demand / sigma, 1.0)
    # np.interp needs increasing x: walk the loss table backwards.
    z = np.interp(target, _LOSS_GRID[::-1], _Z_GRID[::-1])
    result: np.ndarray = np.where(valid, z, 0.0)
    return result


def safety_stock(sigma_protection: float, service_level: float) -> float:
    """Safety stock z * sigma for a cycle service level (never negative)."""
    return max(0.0, safety_factor(service_level) * max(0.0, sigma_protection))


def protection_demand(
    forecast: pd.DataFrame, *, lead_time: int, review_period: int
) -> pd.DataFrame:
    """Mean and standard deviation of demand over lead time + review period per series.

    Uses the first `lead_time + review_period` rows of each series of a frame from
    `inventory.forecast.forecast_demand`. The per-period sigma is read off the 80% interval
    (width / 2.563, the normal 80% width in sigmas); periods are summed as if independent,
    which understates sigma for positively correlated errors: the safety factor is where a
    policy compensates (see `inventory.bench`).

    Returns:
        Columns `unique_id`, `mean`, `sigma`.
    """
    periods = lead_time + review_period
    if periods < 1:
        raise ValueError("lead_time + review_period must be at least 1")
    head = forecast.sort_values(["unique_id", "ds"]).groupby("unique_id").head(periods)
    width = (head["hi_80"] - head["lo_80"]).clip(lower=0.0)
    sigma_80 = 2 * _STANDARD_NORMAL.inv_cdf(0.9)
    per = pd.DataFrame(
        {"unique_id": head["unique_id"], "mean": head["forecast"], "var": (width / sigma_80) ** 2}
    )
    out = per.groupby("unique_id", as_index=False).agg(mean=("mean", "sum"), var=("var", "sum"))
    out["sigma"] = np.sqrt(out.pop("var"))
    return out


def order_up_to_level(mean_protection: float, sigma_protection: float, z: float) -> float:
    """S = expected demand over lead time + review period + z sigma (never negative)."""
    return max(0.0, mean_protection + z * max(0.0, sigma_protection))


def order_quantity(
    order_up_to: float,
    inventory_position: float,
    *,
    pack_size: int = 1,
    min_order_qty: int = 0,
    max_sellable: float | None = None,
) -> int:
    """Units to order now: raise the position to S, in whole packs, respecting MOQ and expiry.

    Args:
        order_up_to: target inventory position S.
        inventory_position: on hand + on order - backorders.
        pack_size: units per pack; orders are whole packs (rounded up to reach S).
        min_order_qty: smallest order the supplier accepts, in units (0: none).
        max_sellable: units that can be sold before the incoming batch expires (forecast
            demand up to its expiry minus stock that sells first); None: no cap.

    Returns:
        A multiple of pack_size, 0 when nothing should be ordered.
    """
    if pack_size < 1:
        raise ValueError("pack_size must be at least 1")
    need = order_up_to - inventory_position
    if need <= 0:
        return 0
    packs = math.ceil(need / pack_size - 1e-9)
    qty = packs * pack_size
    if qty < min_order_qty:
        qty = math.ceil(min_order_qty / pack_size) * pack_size
    if max_sellable is not None:
        cap = math.floor(max(0.0, max_sellable) / pack_size) * pack_size
        if qty > cap:
            # Ordering below the MOQ is impossible; ordering what would expire is waste.
            qty = cap if cap >= min_order_qty else 0
    return int(qty)


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of `simulate_periodic_review` per series."""

    fill_rate: np.ndarray  # served / demand, nan for a series without demand
    mean_on_hand: np.ndarray  # average stock on hand at the end of each period
    served: np.ndarray
    demand: np.ndarray


def simulate_periodic_review(
    demand: np.ndarray,
    order_up_to: np.ndarray,
    *,
    lead_time: int,
    review_period: int,
    initial_on_hand: np.ndarray | None = None,
) -> SimulationResult:
    """Lost-sales periodic-review simulation of many series at once.

    Each period t: receive orders due, serve min(on hand, demand[t]) (the rest is lost),
    then, every `review_period` periods starting at t = 0, order up to `order_up_to[:, t]`
    counting stock on order. An order placed at the end of period t is available from
    period t + lead_time + 1.

    Args:
        demand: (n_series, n_periods) actual demand.
        order_up_to: (n_series, n_periods) S per period (only read on review periods).
        lead_time: whole periods between ordering and the stock being usable (>= 0).
        review_period: periods between reviews (>= 1).
        initial_on_hand: starting stock; default S at t = 0.
    """
    demand = np.asarray(demand, dtype=float)
    levels = np.asarray(order_up_to, dtype=float)
    if demand.shape != levels.shape or demand.ndim != 2:
        raise ValueError("demand and order_up_to must both be (n_series, n_periods)")
    if lead_time < 0 or review_period < 1:
        raise ValueError("need lead_time >= 0 and review_period >= 1")
    n_series, n_periods = demand.shape
    on_hand = (
        levels[:, 0].copy() if initial_on_hand is None else np.asarray(initial_on_hand, float)
    )
    pipeline = np.zeros((n_series, lead_time + 1))  # pipeline[:, k] arrives in k+1 periods
    served = np.zeros(n_series)
    stock_sum = np.zeros(n_series)
    for t in range(n_periods):
        sales = np.minimum(on_hand, demand[:, t])
        served += sales
        on_hand = on_hand - sales
        stock_sum += on_hand
        if t % review_period == 0:
            position = on_hand + pipeline.sum(axis=1)
            pipeline[:, lead_time] += np.maximum(0.0, levels[:, t] - position)
        # Advance one period: what is due next period goes on the shelf.
        on_hand = on_hand + pipeline[:, 0]
        pipeline = np.roll(pipeline, -1, axis=1)
        pipeline[:, -1] = 0.0
    total = demand.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        fill = np.where(total > 0, served / total, np.nan)
    return SimulationResult(
        fill_rate=fill, mean_on_hand=stock_sum / max(1, n_periods), served=served, demand=total
    )


def calibrate_to_fill_rate(
    simulate: Callable[[float], SimulationResult],
    *,
    target: float = 0.95,
    lo: float,
    hi: float,
    iterations: int = 40,
    pooled: bool = False,
) -> tuple[float, SimulationResult]:
    """Smallest policy parameter in [lo, hi] whose fill rate reaches `target`.

    `simulate(parameter)` must give a fill rate non-decreasing in the parameter (a safety
    factor, months of cover, ...). Bisection; returns the parameter and its simulation.

    Args:
        pooled: measure the fill rate over all units (sum served / sum demand) instead of
            the mean of the per-series fill rates.
    """

    def mean_fill(result: SimulationResult) -> float:
        if pooled:
            return float(result.served.sum() / max(result.demand.sum(), 1e-12))
        return float(np.nanmean(result.fill_rate))

    high = simulate(hi)
    if mean_fill(high) < target:
        return hi, high
    low = simulate(lo)
    if mean_fill(low) >= target:
        return lo, low
    for _ in range(iterations):
        mid = (lo + hi) / 2
        result = simulate(mid)
        if mean_fill(result) >= target:
            hi, high = mid, result
        else:
            lo = mid
    return hi, high
