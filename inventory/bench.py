"""`python -m inventory bench [DIR]`: accuracy, coverage, inventory and timing figures.

DIR is laid out like the shared demand folder (see its SOURCES.md): `pharma_sales/`
(`salesdaily.csv`, wide, month-first dates) and `usaid_contraceptive/`
(`contraceptive_logistics_data.csv`, target `stock_distributed`).

Evaluation protocol (held-out data is never seen by fitting, pooling or calibration):

- USAID: the 243 site-product series that cover all 45 months; the last 12 months are held
  out and forecast once, horizon 12, from the 33 months before (as the reference figures
  in SOURCES.md). RMSSE per series is scaled by the naive one-step error of those 33 months;
  series with zero scale (constant history) are left out.
- Pharma daily: 8 series, 6 rolling windows of 28 days (the last 168 days); at each cutoff
  only the history up to it is used. RMSSE per series and window, averaged.
- Baselines are statsforecast models fitted on exactly the same history in the same run.
- Inventory simulation on the same held-out periods (see `simulate_policies`).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from inventory.backtest import cutoffs_for, rolling_origin, score
from inventory.forecast import forecast_demand
from inventory.history import prepare_history
from inventory.policy import (
    SimulationResult,
    calibrate_to_fill_rate,
    safety_factors_for_fill_rate,
    simulate_periodic_review,
)

logger = logging.getLogger(__name__)

PHARMA_COLUMNS = ("M01AB", "M01AE", "N02BA", "N02BE", "N05B", "N05C", "R03", "R06")
TARGET_FILL_RATE = 0.95


@dataclass(frozen=True)
class Dataset:
    """One benchmark set and its protocol."""

    name: str
    history: pd.DataFrame
    freq: str
    season_length: int
    horizon: int
    cutoffs: list[pd.Timestamp]
    ma_window: int  # periods in the "3-month" moving average of the baseline rule
    lead_time: int
    review_period: int
    refit_every: int  # periods between forecast runs in the simulation


def default_data_dir() -> Path:
    """`../shared/data/demand` relative to the repository root."""
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "demand"


def load_usaid(data_dir: Path, *, complete_only: bool = True) -> pd.DataFrame:
    """USAID consumption (`stock_distributed`) as a monthly long frame.

    Args:
        complete_only: keep only series reported in every month of the file.
    """
    raw = pd.read_csv(data_dir / "usaid_contraceptive" / "contraceptive_logistics_data.csv")
    df = pd.DataFrame(
        {
            "unique_id": raw["site_code"].astype(str) + "/" + raw["product_code"].astype(str),
            "ds": pd.to_datetime({"year": raw["year"], "month": raw["month"], "day": 1}),
            "y": raw["stock_distributed"].astype(float),
        }
    )
    if complete_only:
        months = df["ds"].nunique()
        counts = df.groupby("unique_id")["ds"].nunique()
        df = df[df["unique_id"].isin(counts[counts == months].index)]
    return prepare_history(df, "M")[0]


def load_pharma_daily(data_dir: Path) -> pd.DataFrame:
    """The pharmacy's daily sales per ATC category as a long frame (dates are month-first,
    written both as 01-02-2014 and 1/13/2014)."""
    raw = pd.read_csv(data_dir / "pharma_sales" / "salesdaily.csv")
    ds = pd.to_datetime(raw["datum"].str.replace("/", "-"), format="%m-%d-%Y")
    wide = raw[list(PHARMA_COLUMNS)].assign(ds=ds)
    long = wide.melt(id_vars="ds", var_name="unique_id", value_name="y")
    return prepare_history(long[["unique_id", "ds", "y"]], "D")[0]


def datasets(data_dir: Path) -> list[Dataset]:
    """The two benchmark sets with their evaluation protocol."""
    usaid = load_usaid(data_dir)
    pharma = load_pharma_daily(data_dir)
    return [
        Dataset(
            name="USAID monthly (243 complete series)",
            history=usaid,
            freq="M",
            season_length=12,
            horizon=12,
            cutoffs=cutoffs_for(usaid["ds"], horizon=12, n_windows=1, step=12),
            ma_window=3,
            lead_time=1,
            review_period=1,
            refit_every=1,
        ),
        Dataset(
            name="pharma daily (8 series)",
            history=pharma,
            freq="D",
            season_length=7,
            horizon=28,
            cutoffs=cutoffs_for(pharma["ds"], horizon=28, n_windows=6, step=28),
            ma_window=91,
            lead_time=2,
            review_period=7,
            refit_every=7,
        ),
    ]


def baseline_forecaster(
    freq: str, season_length: int, window: int
) -> Callable[[pd.DataFrame, int], pd.DataFrame]:
    """statsforecast baselines named in the issue, fitted on the full (untrimmed) history."""

    def run(history: pd.DataFrame, horizon: int) -> pd.DataFrame:
        from statsforecast import StatsForecast
        from statsforecast.models import (
            IMAPA,
            AutoETS,
            CrostonOptimized,
            HistoricAverage,
            Naive,
            SeasonalNaive,
            WindowAverage,
        )

        models: list[Any] = [
            Naive(),
            SeasonalNaive(season_length=season_length),
            WindowAverage(window_size=window),
            AutoETS(season_length=season_length),
            CrostonOptimized(),
            IMAPA(),
        ]
        sf = StatsForecast(
            models=models,
            freq={"D": "D", "W": "W", "M": "MS"}[freq],
            n_jobs=1,
            fallback_model=HistoricAverage(),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out: pd.DataFrame = sf.forecast(df=history, h=horizon)
        return out.reset_index(drop=True)

    return run


def evaluate_accuracy(data: Dataset, n_jobs: int | None) -> pd.DataFrame:
    """RMSSE, WAPE, bias and coverage of `forecast_demand` and the baselines."""

    def ours(history: pd.DataFrame, horizon: int) -> pd.DataFrame:
        return forecast_demand(
            history,
            horizon=horizon,
            freq=data.freq,
            season_length=data.season_length,
            n_jobs=n_jobs,
        )

    window = {"M": 3, "W": 8, "D": 28}[data.freq]
    mine = rolling_origin(data.history, ours, horizon=data.horizon, cutoffs=data.cutoffs)
    base = rolling_origin(
        data.history,
        baseline_forecaster(data.freq, data.season_length, window),
        horizon=data.horizon,
        cutoffs=data.cutoffs,
    )
    columns = [c for c in base.columns if c not in ("unique_id", "cutoff", "ds", "y")]
    table = pd.concat(
        [
            score(mine, data.history, ["forecast"], intervals=True),
            score(base, data.history, columns),
        ],
        ignore_index=True,
    )
    table.loc[0, "model"] = "inventory.forecast_demand"
    return table


def simulate_policies(data: Dataset, n_jobs: int | None) -> dict[str, float]:
    """Stock each policy needs for a 95% mean fill rate over the held-out periods.

    Periodic review at the end of every `review_period`-th period, orders usable from
    `lead_time` + 1 periods later, lost sales, starting with S on hand. Both policies
    get one scalar knob, set by bisection so that the mean over series of the fill rate is
    95%:

    - moving-average rule: S = k x (mean demand of the last `ma_window` periods) x (L + R);
    - global-z forecast policy: S = forecast demand over L + R + z x sigma (sigma from the
      80% interval, periods summed as independent);
    - fill-rate forecast policy: S = forecast + z_i x c x sigma with z_i per series and
      review from the normal loss function for a 95% fill rate; the knob is c.

    Forecasts are re-made every `refit_every` periods from the history up to that day
    (held-out actuals never seen).

    Stock is the average on hand at period ends, expressed per series in periods of its
    mean held-out demand and averaged over series (so no product's unit dominates); the
    ratio of total units is reported too. Fill rate is measured two ways: the mean of the
    per-series fill rates (every medicine counts alike) and pooled over all units.
    """
    history = data.history
    start = data.cutoffs[0]
    dates = pd.DatetimeIndex(history["ds"].unique()).sort_values()
    test_dates = dates[dates > start]
    wide = history.pivot(index="unique_id", columns="ds", values="y").fillna(0.0)
    demand = wide[test_dates].to_numpy()
    ids = wide.index.to_numpy()
    n_series, n_periods = demand.shape
    protection = data.lead_time + data.review_period
    reviews = list(range(0, n_periods, data.review_period))

    ma = np.zeros_like(demand)
    fc_mean = np.zeros_like(demand)
    fc_sigma = np.zeros_like(demand)
    all_values = wide.to_numpy()
    first_test = int(np.searchsorted(wide.columns.to_numpy(), test_dates[0].to_datetime64()))
    sigma_80 = 2 * NormalDist().inv_cdf(0.9)
    made_at = -(10**9)
    per_mean = per_var = np.zeros((n_series, 0))
    for t in reviews:
        # The review at the end of held-out period t sees history up to and including t.
        upto = first_test + t + 1
        ma[:, t] = all_values[:, max(0, upto - data.ma_window) : upto].mean(axis=1)
        if t - made_at >= data.refit_every:
            made_at = t
            seen = history[history["ds"] <= test_dates[t]]
            fc = forecast_demand(
                seen,
                horizon=data.refit_every - 1 + protection,
                freq=data.freq,
                season_length=data.season_length,
                n_jobs=n_jobs,
            )
            fc = fc.set_index("unique_id").loc[ids]
            width = (fc["hi_80"] - fc["lo_80"]).to_numpy().reshape(n_series, -1)
            per_mean = fc["forecast"].to_numpy().reshape(n_series, -1)
            per_var = (width / sigma_80) ** 2
        lag = t - made_at
        fc_mean[:, t] = per_mean[:, lag : lag + protection].sum(axis=1)
        fc_sigma[:, t] = np.sqrt(per_var[:, lag : lag + protection].sum(axis=1))

    def run(levels: np.ndarray) -> SimulationResult:
        return simulate_periodic_review(
            demand, levels, lead_time=data.lead_time, review_period=data.review_period
        )

    def ma_rule(k: float) -> SimulationResult:
        return run(k * ma * protection)

    def forecast_rule(z: float) -> SimulationResult:
        return run(np.maximum(0.0, fc_mean + z * fc_sigma))

    # Textbook fill-rate policy: each series gets the z whose expected shortage leaves a
    # 95% fill rate given its own forecast; the knob c rescales every sigma.
    review_demand = fc_mean * data.review_period / protection

    def fill_rate_rule(c: float) -> SimulationResult:
        sigma = c * fc_sigma
        z = safety_factors_for_fill_rate(TARGET_FILL_RATE, review_demand, sigma)
        return run(np.maximum(0.0, fc_mean + z * sigma))

    mean_demand = demand.mean(axis=1)
    valid = mean_demand > 0

    def stock(result: SimulationResult) -> float:
        return float(np.mean(result.mean_on_hand[valid] / mean_demand[valid]))

    figures: dict[str, float] = {}
    for label, pooled in (("mean-of-series fill", False), ("pooled-units fill", True)):
        k, ma_result = calibrate_to_fill_rate(
            ma_rule, target=TARGET_FILL_RATE, lo=0.0, hi=20.0, pooled=pooled
        )
        z, fc_result = calibrate_to_fill_rate(
            forecast_rule, target=TARGET_FILL_RATE, lo=-3.0, hi=15.0, pooled=pooled
        )
        c, fr_result = calibrate_to_fill_rate(
            fill_rate_rule, target=TARGET_FILL_RATE, lo=0.0, hi=10.0, pooled=pooled
        )
        ma_stock = stock(ma_result)
        ma_units = float(ma_result.mean_on_hand.sum())
        figures.update(
            {
                f"[{label}] MA rule k": k,
                f"[{label}] MA stock (periods of demand)": ma_stock,
                f"[{label}] global-z policy z": z,
                f"[{label}] global-z stock ratio": stock(fc_result) / ma_stock,
                f"[{label}] global-z stock ratio in units": float(
                    fc_result.mean_on_hand.sum() / ma_units
                ),
                f"[{label}] fill-rate policy sigma factor": c,
                f"[{label}] fill-rate stock ratio": stock(fr_result) / ma_stock,
                f"[{label}] fill-rate stock ratio in units": float(
                    fr_result.mean_on_hand.sum() / ma_units
                ),
            }
        )
    return figures


def make_timing_input(data_dir: Path, n_series: int, path: Path, seed: int = 0) -> None:
    """Write `n_series` series resampled (with replacement) from all USAID series."""
    usaid = load_usaid(data_dir, complete_only=False)
    groups = {str(uid): g for uid, g in usaid.groupby("unique_id", sort=True)}
    names = np.array(sorted(groups))
    rng = np.random.default_rng(seed)
    picks = rng.choice(names, size=n_series, replace=True)
    parts = []
    for i, uid in enumerate(picks):
        part = groups[str(uid)].copy()
        part["unique_id"] = f"r{i:05d}/{uid}"
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["ds"] = out["ds"].dt.strftime("%Y-%m-%d")
    out.to_csv(path, index=False)


def time_cli(data_dir: Path, n_series: int, horizon: int = 12) -> tuple[float, int]:
    """Wall time of `python -m inventory forecast` on resampled USAID series."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "history.csv"
        make_timing_input(data_dir, n_series, source)
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "inventory",
                "forecast",
                "--input",
                str(source),
                "--horizon",
                str(horizon),
                "--output",
                str(Path(tmp) / "forecast.csv"),
            ],
            check=False,
        )
        return time.monotonic() - started, done.returncode


def run_bench(
    data_dir: Path | None,
    *,
    timing_series: int = 10_000,
    skip_timing: bool = False,
    skip_simulation: bool = False,
    n_jobs: int | None = None,
) -> int:
    """Run the benchmark and print its figures; returns the exit status."""
    folder = data_dir or default_data_dir()
    print(f"# inventory bench on {folder}", flush=True)
    for data in datasets(folder):
        started = time.monotonic()
        table = evaluate_accuracy(data, n_jobs)
        print(f"\n## {data.name}: accuracy ({time.monotonic() - started:.0f}s)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"), flush=True)
        if not skip_simulation:
            started = time.monotonic()
            sim = simulate_policies(data, n_jobs)
            print(
                f"\n## {data.name}: inventory at {TARGET_FILL_RATE:.0%} fill "
                f"(review {data.review_period}, lead time {data.lead_time}; "
                f"{time.monotonic() - started:.0f}s)"
            )
            for key, value in sim.items():
                print(f"{key:50s} {value:.4f}")
            sys.stdout.flush()
    if not skip_timing:
        elapsed, status = time_cli(folder, timing_series)
        print(f"\n## timing: {timing_series} resampled USAID series, horizon 12")
        print(f"wall time {elapsed:.1f}s, exit status {status}", flush=True)
    return 0
