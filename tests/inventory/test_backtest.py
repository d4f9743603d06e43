import numpy as np
import pandas as pd
import pytest

from inventory.backtest import coverage, cutoffs_for, rmsse, rolling_origin, score, wape


def test_rmsse_scales_by_the_in_sample_naive_error() -> None:
    insample = np.array([1.0, 3.0, 1.0, 3.0])  # naive MSE 4
    assert rmsse(np.array([2.0, 2.0]), np.array([4.0, 0.0]), insample) == pytest.approx(1.0)
    assert np.isnan(rmsse(np.array([1.0]), np.array([1.0]), np.array([5.0, 5.0])))


def test_wape_and_coverage() -> None:
    actual = np.array([1.0, 2.0, 3.0, 4.0])
    assert wape(actual, actual + 1) == pytest.approx(0.4)
    assert coverage(actual, actual - 1, np.array([2.0, 3.0, 2.0, 5.0])) == 0.75


def test_rolling_origin_never_shows_the_forecaster_the_future() -> None:
    days = pd.date_range("2024-01-01", periods=20, freq="D")
    history = pd.DataFrame({"unique_id": "a", "ds": days, "y": np.arange(20.0)})
    cutoffs = cutoffs_for(history["ds"], horizon=3, n_windows=2, step=3)
    assert cutoffs == [days[13], days[16]]
    seen_last: list[pd.Timestamp] = []

    def last_value(seen: pd.DataFrame, horizon: int) -> pd.DataFrame:
        seen_last.append(seen["ds"].max())
        future = pd.date_range(seen["ds"].max() + pd.Timedelta(days=1), periods=horizon)
        return pd.DataFrame({"unique_id": "a", "ds": future, "forecast": seen["y"].iloc[-1]})

    out = rolling_origin(history, last_value, horizon=3, cutoffs=cutoffs)
    assert seen_last == cutoffs
    assert len(out) == 6
    table = score(out, history, ["forecast"])
    # Naive on a +1 trend: errors 1, 2, 3 against a naive in-sample error of 1.
    assert table.loc[0, "rmsse"] == pytest.approx(np.sqrt((1 + 4 + 9) / 3))
