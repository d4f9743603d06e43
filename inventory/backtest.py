"""Rolling-origin evaluation and the error metrics used to judge forecasts.

Protocol: for each cutoff (origin) the forecaster sees only history up to and including
the cutoff; its forecasts for the following `horizon` periods are compared with the
actuals. RMSSE follows the M5 competition: root mean squared error over the horizon,
divided by the in-sample mean squared one-step naive error of the history seen at that
cutoff; series whose in-sample naive error is zero are left out (RMSSE undefined).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

Forecaster = Callable[[pd.DataFrame, int], pd.DataFrame]


def naive_mse(y: np.ndarray) -> float:
    """Mean squared lag-1 difference of an in-sample series (the RMSSE denominator)."""
    values = np.asarray(y, dtype=float)
    return float(np.mean(np.diff(values) ** 2)) if len(values) >= 2 else float("nan")


def rmsse(actual: np.ndarray, forecast: np.ndarray, insample: np.ndarray) -> float:
    """Root mean squared scaled error of one series (nan when the scale is zero)."""
    scale = naive_mse(insample)
    if not scale > 0:
        return float("nan")
    err = np.asarray(actual, dtype=float) - np.asarray(forecast, dtype=float)
    return float(np.sqrt(np.mean(err**2) / scale))


def wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Weighted absolute percentage error: sum |error| / sum actual (pooled)."""
    total = float(np.sum(actual))
    return float(np.sum(np.abs(np.asarray(actual) - forecast)) / total) if total > 0 else np.nan


def bias(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Relative bias: sum(forecast - actual) / sum actual; positive means over-forecast."""
    total = float(np.sum(actual))
    return float(np.sum(np.asarray(forecast) - actual) / total) if total > 0 else np.nan


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actuals inside [lower, upper] (bounds included)."""
    a = np.asarray(actual, dtype=float)
    return float(np.mean((a >= lower) & (a <= upper))) if len(a) else float("nan")


def cutoffs_for(ds: pd.Series, *, horizon: int, n_windows: int, step: int) -> list[pd.Timestamp]:
    """The last `n_windows` cutoffs, `step` periods apart, leaving `horizon` periods after
    the last one. Dates are taken from the sorted unique values of `ds`."""
    dates = pd.DatetimeIndex(pd.to_datetime(ds)).unique().sort_values()
    out = []
    for j in range(n_windows):
        index = len(dates) - horizon - 1 - j * step
        if index < 1:
            break
        out.append(dates[index])
    return sorted(out)


def rolling_origin(
    history: pd.DataFrame,
    forecaster: Forecaster,
    *,
    horizon: int,
    cutoffs: Sequence[pd.Timestamp],
) -> pd.DataFrame:
    """Run `forecaster(history_up_to_cutoff, horizon)` at each cutoff and join the actuals.

    The forecaster must return a frame with `unique_id`, `ds` and any forecast columns.

    Returns:
        The forecasts with columns `cutoff` and `y` (actual; rows without an actual are
        dropped).
    """
    frames = []
    for cutoff in cutoffs:
        seen = history[history["ds"] <= cutoff]
        fc = forecaster(seen, horizon)
        fc = fc.merge(history, on=["unique_id", "ds"], how="inner")
        fc.insert(1, "cutoff", cutoff)
        frames.append(fc)
    return pd.concat(frames, ignore_index=True)


def score(
    evaluated: pd.DataFrame,
    history: pd.DataFrame,
    columns: Sequence[str],
    *,
    intervals: bool = False,
) -> pd.DataFrame:
    """Metrics per forecast column over a `rolling_origin` result.

    RMSSE is computed per series and cutoff (scaled by the history seen at that cutoff),
    averaged over cutoffs, then over series. WAPE and bias pool every forecast.

    Args:
        evaluated: output of `rolling_origin` (columns unique_id, cutoff, ds, y, ...).
        history: the full gap-filled history (for the in-sample scales).
        columns: forecast columns to score.
        intervals: also report coverage of `lo_80/hi_80` and `lo_95/hi_95` (only for the
            column `forecast`).

    Returns:
        One row per column: `model, rmsse, wape, bias` (+ `coverage_80, coverage_95`).
    """
    scales = _scales(evaluated, history)
    rows = []
    for col in columns:
        err2 = (evaluated["y"] - evaluated[col]) ** 2
        per = (
            pd.DataFrame(
                {"unique_id": evaluated["unique_id"], "cutoff": evaluated["cutoff"], "e": err2}
            )
            .groupby(["unique_id", "cutoff"])["e"]
            .mean()
        )
        scaled = (per / scales.reindex(per.index)).pow(0.5)
        scaled = scaled[np.isfinite(scaled.to_numpy())]
        row: dict[str, object] = {
            "model": col,
            "rmsse": float(scaled.groupby(level=0).mean().mean()),
            "wape": wape(evaluated["y"].to_numpy(), evaluated[col].to_numpy()),
            "bias": bias(evaluated["y"].to_numpy(), evaluated[col].to_numpy()),
        }
        if intervals and col == "forecast":
            for level in (80, 95):
                row[f"coverage_{level}"] = coverage(
                    evaluated["y"].to_numpy(),
                    evaluated[f"lo_{level}"].to_numpy(),
                    evaluated[f"hi_{level}"].to_numpy(),
                )
        rows.append(row)
    return pd.DataFrame(rows)


def _scales(evaluated: pd.DataFrame, history: pd.DataFrame) -> pd.Series:
    keys = evaluated[["unique_id", "cutoff"]].drop_duplicates()
    grouped = {uid: g for uid, g in history.groupby("unique_id", sort=False)}
    values = {}
    for uid, cutoff in keys.itertuples(index=False):
        g = grouped[uid]
        values[(uid, cutoff)] = naive_mse(g.loc[g["ds"] <= cutoff, "y"].to_numpy())
    index = pd.MultiIndex.from_tuples(list(values), names=["unique_id", "cutoff"])
    return pd.Series(list(values.values()), index=index, dtype=float)
