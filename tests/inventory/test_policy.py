import numpy as np
import pandas as pd
import pytest

from inventory.policy import (
    calibrate_to_fill_rate,
    normal_loss,
    order_quantity,
    order_up_to_level,
    protection_demand,
    safety_factor,
    safety_factor_for_fill_rate,
    safety_factors_for_fill_rate,
    safety_stock,
    simulate_periodic_review,
)


def test_safety_factor_is_the_normal_quantile() -> None:
    assert safety_factor(0.95) == pytest.approx(1.6449, abs=1e-4)
    assert safety_stock(10.0, 0.5) == 0.0
    with pytest.raises(ValueError):
        safety_factor(1.0)


def test_fill_rate_factor_inverts_the_loss_function() -> None:
    z = safety_factor_for_fill_rate(0.98, demand_per_review=100.0, sigma_protection=40.0)
    assert 40.0 * normal_loss(z) == pytest.approx(0.02 * 100.0, rel=1e-6)


def test_order_up_to_level_is_never_negative() -> None:
    assert order_up_to_level(10.0, 2.0, 1.5) == 13.0
    assert order_up_to_level(1.0, 2.0, -2.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"pack_size": 1}, 7),
        ({"pack_size": 5}, 10),
        ({"pack_size": 5, "min_order_qty": 20}, 20),
        ({"pack_size": 5, "max_sellable": 8}, 5),
        ({"pack_size": 5, "min_order_qty": 20, "max_sellable": 12}, 0),
    ],
)
def test_order_quantity_rounds_and_caps(kwargs: dict, expected: int) -> None:
    assert order_quantity(20.0, 13.0, **kwargs) == expected


def test_nothing_is_ordered_above_the_target() -> None:
    assert order_quantity(10.0, 12.0, pack_size=3) == 0


def test_protection_demand_sums_the_lead_time_and_review_periods() -> None:
    fc = pd.DataFrame(
        {
            "unique_id": ["a"] * 3,
            "ds": pd.date_range("2024-01-01", periods=3, freq="MS"),
            "forecast": [1.0, 2.0, 4.0],
            "lo_80": [0.0, 0.0, 0.0],
            "hi_80": [2.5631, 2.5631, 2.5631],
        }
    )
    out = protection_demand(fc, lead_time=1, review_period=1).iloc[0]
    assert out["mean"] == 3.0
    assert out["sigma"] == pytest.approx(np.sqrt(2.0), rel=1e-3)


def test_simulation_with_exact_stock_serves_everything() -> None:
    demand = np.full((1, 12), 5.0)
    result = simulate_periodic_review(demand, np.full((1, 12), 10.0), lead_time=1, review_period=1)
    assert result.fill_rate[0] == 1.0
    # S covers lead time + review exactly: 5 left after the first period, then none.
    assert result.mean_on_hand[0] == pytest.approx(5.0 / 12)


def test_simulation_loses_sales_when_stock_runs_out() -> None:
    demand = np.array([[10.0, 10.0, 10.0, 10.0]])
    result = simulate_periodic_review(demand, np.full((1, 4), 10.0), lead_time=1, review_period=2)
    # t0: serve 10, order 10 (arrives for t2); t1: nothing; t2: serve 10, order 10; t3: none.
    assert result.served[0] == 20.0
    assert result.fill_rate[0] == 0.5


def test_calibration_finds_the_smallest_sufficient_parameter() -> None:
    rng = np.random.default_rng(1)
    demand = rng.poisson(5.0, size=(20, 60)).astype(float)

    def run(k: float):
        return simulate_periodic_review(
            demand, np.full(demand.shape, 10.0 * k), lead_time=1, review_period=1
        )

    k, result = calibrate_to_fill_rate(run, target=0.95, lo=0.0, hi=5.0)
    assert np.nanmean(result.fill_rate) >= 0.95
    assert np.nanmean(run(k * 0.97).fill_rate) < 0.95


def test_vectorised_fill_rate_factors_match_the_scalar_ones() -> None:
    demand = np.array([100.0, 10.0, 0.0, 5.0])
    sigma = np.array([40.0, 2.0, 3.0, 0.0])
    z = safety_factors_for_fill_rate(0.95, demand, sigma)
    assert z[0] == pytest.approx(safety_factor_for_fill_rate(0.95, 100.0, 40.0), abs=2e-3)
    assert z[1] == pytest.approx(safety_factor_for_fill_rate(0.95, 10.0, 2.0), abs=2e-3)
    assert z[2] == 0.0
    assert z[3] == 0.0
