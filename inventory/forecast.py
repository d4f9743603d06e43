"""Demand forecasts with calibrated prediction intervals.

`forecast_demand` combines a small pool of statsforecast models per series (the pool
depends on the series' demand class and length; for ids of the form "<branch>/<sku>" it
also takes the series' share of its product's current level, see `group_level_member`),
and turns the pooled back-test errors of
that combination into prediction intervals (split-conformal over several rolling windows,
scaled per series). Intermittent-demand models have no native intervals; this calibration
gives every series honest intervals the same way.

statsforecast is imported inside functions: it takes seconds to import and `inventory`
must stay cheap to import for the web app.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from inventory.classify import DemandClass, classify_demand
from inventory.history import (
    DEFAULT_SEASON_LENGTH,
    pandas_freq,
    prepare_history,
    trim_leading_zeros,
)

logger = logging.getLogger(__name__)

#: Output columns of `forecast_demand`, as in docs/spec forecast-cli.md.
FORECAST_COLUMNS = ("unique_id", "ds", "forecast", "lo_80", "hi_80", "lo_95", "hi_95")
LEVELS = (80, 95)

#: Window of the moving-average member, per frequency: about a month of days, a quarter of
#: weeks or months (the horizon a pharmacy's "average consumption" usually covers).
WINDOW_AVERAGE_SIZE = {"D": 28, "W": 13, "M": 3}

#: Seasonal models need several full seasons to estimate seasonal states at all.
MIN_SEASONS_FOR_SEASONAL = 4

#: Series per work unit: small enough for a smooth progress bar, large enough that the
#: per-call overhead of statsforecast stays negligible.
CHUNK_SIZE = 500

#: Pool members by demand class. Equal-weight combinations of a few simple methods are
#: hard to beat (M3/M4 competitions); per-series selection on a handful of windows is noisy.
SMOOTH_POOL = ("ses", "window_average", "ets", "theta")
INTERMITTENT_POOL = ("ses", "window_average", "imapa", "tsb")
#: Pools that also take the cross-series `group_level` member (see `group_level_member`),
#: chosen on the USAID training months (origins 21 and 27 of 33).
GROUP_LEVEL_POOLS = (SMOOTH_POOL, INTERMITTENT_POOL)
#: Daily series with more than a year of history: the weekly cycle (averaged per weekday
#: over a year) and the annual cycle carry information the level models above ignore.
#: Chosen on the six 28-day windows *before* the bench's held-out windows.
DAILY_YEAR_POOL = ("ets", "theta", "yearly", "seasonal_average")
MODEL_NAMES = (
    "ses",
    "window_average",
    "ets",
    "theta",
    "yearly",
    "seasonal_average",
    "imapa",
    "tsb",
    "croston",
    "naive",
)

#: The `yearly` member, for daily and weekly data: periods in a year, half-width of the
#: window that smooths last year's path, and the "recent level" window. The daily recent
#: level spans 56 days (was 28): on the twelve pharma windows before the bench's held-out
#: ones, RMSSE 0.7450 -> 0.7428, better in both halves.
YEARLY_PROFILE = {"D": (365, 14, 56), "W": (52, 2, 4)}
#: Periods in a year, per frequency.
YEAR_PERIODS = {"D": 364, "W": 52, "M": 12}
#: Earlier years averaged by the `yearly` member.
YEARLY_MAX_YEARS = 3

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class _Task:
    """One chunk of series sharing a model pool."""

    history: pd.DataFrame
    pool: tuple[str, ...]
    seasonal: bool
    horizon: int
    freq: str
    season_length: int
    n_windows: int
    step: int
    group_level: bool = False  # the pool takes the `group_level` member (see below)


@dataclass
class _ChunkResult:
    """Per series and window (0: the forecast, 1..n_windows: back-tests), before the
    cross-series `group_level` member is added in the parent process."""

    unique_id: np.ndarray
    ds: np.ndarray  # (n_series, horizon) datetime64
    scale: np.ndarray  # (n_series,)
    member_sum: np.ndarray  # (n_series, n_win, horizon) sum of the kept members
    member_count: np.ndarray  # (n_series, n_win, horizon) members that gave a number
    fallback: np.ndarray  # (n_series, n_win) history mean, for when none did
    actual: np.ndarray  # (n_series, n_win, horizon), nan for window 0 and absent windows
    ses: np.ndarray  # (n_series, n_win, horizon) the SES member; nan if not group_level
    cutoff: np.ndarray  # (n_series, n_win) datetime64 last date seen, NaT if absent
    best_mse: np.ndarray  # (n_series,) back-test MSE of the series' best member
    n_series: int = field(default=0)


def default_n_jobs() -> int:
    """Worker processes to use: every core the process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def forecast_demand(
    history: pd.DataFrame,
    *,
    horizon: int,
    freq: str | None = None,
    season_length: int | None = None,
    models: Sequence[str] | None = None,
    n_windows: int = 4,
    n_jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Forecast each series `horizon` periods past its own last date.

    Args:
        history: long frame `unique_id, ds, y` (validated and gap-filled here; a missing
            period is zero demand).
        horizon: periods to forecast (>= 1).
        freq: "D", "W" or "M"; detected from the dates when None.
        season_length: seasonal period; default 7 (D), 52 (W), 12 (M). Seasonal models
            are only used on series with at least four full seasons.
        models: names from `MODEL_NAMES` to combine for every series, instead of the
            automatic pool per demand class.
        n_windows: rolling back-test windows per series used to calibrate intervals.
        n_jobs: worker processes (default: all available cores).
        progress: called as `progress(done_series, total_series)` while working.

    Returns:
        Columns `unique_id, ds, forecast, lo_80, hi_80, lo_95, hi_95`, one row per series
        and future period, sorted; no value is negative.

    Raises:
        inventory.history.HistoryError: invalid history.
        ValueError: invalid arguments.
    """
    if horizon < 1:
        raise ValueError("horizon must be at least 1")
    if n_windows < 1:
        raise ValueError("n_windows must be at least 1")
    if models is not None:
        unknown = sorted(set(models) - set(MODEL_NAMES))
        if unknown or not models:
            raise ValueError(f"unknown model(s) {unknown}; choose from {MODEL_NAMES}")
    filled, freq = prepare_history(history, freq)
    season = season_length or DEFAULT_SEASON_LENGTH[freq]
    if season < 1:
        raise ValueError("season_length must be at least 1")
    trimmed = trim_leading_zeros(filled, min_length=1)
    step = max(1, math.ceil(horizon / 2))
    jobs = n_jobs or default_n_jobs()
    tasks = _plan_tasks(trimmed, models, horizon, freq, season, n_windows, step, jobs)
    results = _run_tasks(tasks, jobs, progress)
    classes = classify_demand(trimmed).set_index("unique_id")["demand_class"]
    return _assemble(results, classes, horizon)


def _plan_tasks(
    history: pd.DataFrame,
    models: Sequence[str] | None,
    horizon: int,
    freq: str,
    season: int,
    n_windows: int,
    step: int,
    n_jobs: int,
) -> list[_Task]:
    classes = classify_demand(history)
    # Few long series (a pharmacy's daily sales) still keep every worker busy.
    chunk_size = max(1, min(CHUNK_SIZE, math.ceil(len(classes) / n_jobs)))
    lengths = history.groupby("unique_id", sort=False).size()
    info = classes.set_index("unique_id").join(lengths.rename("length"))
    keys: dict[tuple[tuple[str, ...], bool], list[str]] = {}
    for uid, row in info.iterrows():
        seasonal = season > 1 and int(row["length"]) >= MIN_SEASONS_FOR_SEASONAL * season
        if models is not None:
            pool = tuple(models)
        elif DemandClass(row["demand_class"]) in (DemandClass.SMOOTH, DemandClass.ERRATIC):
            year_ahead = YEARLY_PROFILE["D"][0] + horizon + YEARLY_PROFILE["D"][1]
            daily_year = freq == "D" and season == 7 and int(row["length"]) > year_ahead
            pool = DAILY_YEAR_POOL if daily_year else SMOOTH_POOL
        else:
            pool = INTERMITTENT_POOL
        uses_season = seasonal and any(m in ("ets", "theta", "seasonal_average") for m in pool)
        keys.setdefault((pool, uses_season), []).append(str(uid))
    tasks = []
    by_id = history.set_index("unique_id")
    for (pool, seasonal), ids in keys.items():
        group_level = models is None and pool in GROUP_LEVEL_POOLS
        for start in range(0, len(ids), chunk_size):
            chunk_ids = ids[start : start + chunk_size]
            chunk = by_id.loc[chunk_ids].reset_index()
            tasks.append(
                _Task(chunk, pool, seasonal, horizon, freq, season, n_windows, step, group_level)
            )
    return tasks


def _run_tasks(
    tasks: list[_Task], n_jobs: int, progress: ProgressCallback | None
) -> list[_ChunkResult]:
    total = sum(int(t.history["unique_id"].nunique()) for t in tasks)
    done = 0
    if progress is not None:
        progress(0, total)
    results: list[_ChunkResult] = []
    if n_jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            result = _forecast_chunk(task)
            results.append(result)
            done += result.n_series
            if progress is not None:
                progress(done, total)
        return results
    # fork keeps the parent's imports (statsforecast, numba caches) warm in the workers.
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=get_context("fork")) as pool:
        futures = [pool.submit(_forecast_chunk, task) for task in tasks]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            done += result.n_series
            if progress is not None:
                progress(done, total)
    return results


def _make_models(pool: Sequence[str], freq: str, season: int, seasonal: bool) -> list[Any]:
    from statsforecast.models import (
        IMAPA,
        TSB,
        AutoETS,
        CrostonOptimized,
        DynamicOptimizedTheta,
        Naive,
        SeasonalWindowAverage,
        SimpleExponentialSmoothingOptimized,
        WindowAverage,
    )

    m = season if seasonal else 1
    factories: dict[str, Callable[[], Any]] = {
        "ses": lambda: SimpleExponentialSmoothingOptimized(alias="ses"),
        "window_average": lambda: WindowAverage(
            window_size=WINDOW_AVERAGE_SIZE[freq], alias="window_average"
        ),
        # Non-seasonal ETS without the multiplicative search keeps short series cheap.
        "ets": lambda: AutoETS(season_length=m, model="ZZZ" if m > 1 else "ZZN", alias="ets"),
        "theta": lambda: DynamicOptimizedTheta(season_length=m, alias="theta"),
        # Mean of the same point of the cycle over about a year of cycles.
        "seasonal_average": lambda: SeasonalWindowAverage(
            season_length=m,
            window_size=max(1, YEAR_PERIODS[freq] // m),
            alias="seasonal_average",
        ),
        "imapa": lambda: IMAPA(alias="imapa"),
        "tsb": lambda: TSB(alpha_d=0.2, alpha_p=0.2, alias="tsb"),
        "croston": lambda: CrostonOptimized(alias="croston"),
        "naive": lambda: Naive(alias="naive"),
    }
    return [factories[name]() for name in pool if name in factories]


def _forecast_chunk(task: _Task) -> _ChunkResult:
    """Fit the pool on the full series and on each back-test window, in one call."""
    from statsforecast import StatsForecast
    from statsforecast.models import HistoricAverage

    h, step, n_windows = task.horizon, task.step, task.n_windows
    hist = task.history
    codes, uniques = pd.factorize(hist["unique_id"].to_numpy(), sort=False)
    n_series = len(uniques)
    lengths = np.bincount(codes, minlength=n_series)
    pos = hist.groupby("unique_id", sort=False).cumcount().to_numpy()
    y_all = hist["y"].to_numpy(dtype=float)
    ds_all = hist["ds"].to_numpy()
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])

    n_win = n_windows + 1
    pieces = []
    for j in range(n_win):
        cut = lengths - (0 if j == 0 else h + (j - 1) * step)
        keep = pos < cut[codes]
        # A back-test window needs at least two training periods to say anything.
        if j > 0:
            keep &= cut[codes] >= 2
        if not keep.any():
            continue
        pieces.append(
            pd.DataFrame(
                {
                    "unique_id": codes[keep] * n_win + j,
                    "ds": ds_all[keep],
                    "y": y_all[keep],
                }
            )
        )
    stacked = pd.concat(pieces, ignore_index=True)
    models = _make_models(task.pool, task.freq, task.season_length, task.seasonal)
    sf = StatsForecast(
        models=models,
        freq=pandas_freq(task.freq, hist["ds"]),
        n_jobs=1,
        fallback_model=HistoricAverage(),
    )
    with warnings.catch_warnings():
        # statsforecast warns about degenerate fits (e.g. zero variance) it then handles.
        warnings.simplefilter("ignore", RuntimeWarning)
        fc = sf.forecast(df=stacked, h=h)
    names = [str(m.alias) for m in models]
    values = np.clip(fc[names].to_numpy(dtype=float), 0.0, None)
    if "yearly" in task.pool and task.freq in YEARLY_PROFILE:
        values = np.column_stack([values, _yearly_column(stacked, fc, h, task.freq)])
    ids = fc["unique_id"].to_numpy().reshape(-1, h)[:, 0].astype(np.int64)
    series_idx, window = np.divmod(ids, n_win)
    members = values.reshape(len(ids), h, -1)
    actual = np.full((len(ids), h), np.nan)
    for back in np.flatnonzero(window > 0).tolist():
        s, j = int(series_idx[back]), int(window[back])
        end = int(starts[s]) + int(lengths[s]) - h - (j - 1) * step
        actual[back] = y_all[end : end + h]
    keep, best_mse = _members_to_keep(members, actual, series_idx, n_series)
    # A member may return nan instead of raising (a moving average longer than the
    # series, `yearly` without a year of history): combine the members that gave a number.
    chosen = np.where(keep[series_idx][:, None, :], members, np.nan)
    member_sum = np.nansum(chosen, axis=2)
    member_count = np.isfinite(chosen).sum(axis=2)
    history_mean = stacked.groupby("unique_id")["y"].mean().reindex(ids).to_numpy()
    fds = fc["ds"].to_numpy().reshape(-1, h)
    cut_ds = stacked.groupby("unique_id")["ds"].max().reindex(ids).to_numpy()

    out = _ChunkResult(
        unique_id=np.asarray(uniques).astype(str),
        ds=np.empty((n_series, h), dtype="datetime64[ns]"),
        scale=np.array(
            [_scale(y_all[int(a) : int(a) + int(n)]) for a, n in zip(starts, lengths, strict=True)]
        ),
        member_sum=np.full((n_series, n_win, h), np.nan),
        member_count=np.zeros((n_series, n_win, h), dtype=np.int64),
        fallback=np.full((n_series, n_win), np.nan),
        actual=np.full((n_series, n_win, h), np.nan),
        ses=np.full((n_series, n_win, h), np.nan),
        cutoff=np.full((n_series, n_win), np.datetime64("NaT"), dtype="datetime64[ns]"),
        best_mse=best_mse,
        n_series=n_series,
    )
    ses_column = names.index("ses") if task.group_level and "ses" in names else None
    for row in range(len(ids)):
        s, j = int(series_idx[row]), int(window[row])
        if j == 0:
            out.ds[s] = fds[row]
        out.member_sum[s, j] = member_sum[row]
        out.member_count[s, j] = member_count[row]
        out.fallback[s, j] = history_mean[row]
        out.actual[s, j] = actual[row]
        out.cutoff[s, j] = cut_ds[row]
        if ses_column is not None:
            out.ses[s, j] = members[row, :, ses_column]
    return out


#: A member whose back-test mean squared error on a series exceeds this multiple of the
#: best member's (RMSE twice the best) is left out of that series' combination: a guard
#: against a member that fails on a series, not a selection (selection on a few windows
#: chases noise).
TRIM_MSE_RATIO = 4.0


def _members_to_keep(
    members: np.ndarray, actual: np.ndarray, series_idx: np.ndarray, n_series: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n_series, n_members) mask of the members each series combines, and (n_series,)
    back-test MSE of each series' best member (inf without a back-test)."""
    n_members = members.shape[2]
    sq = (actual[:, :, None] - members) ** 2  # nan on final rows and missing members
    total = np.zeros((n_series, n_members))
    count = np.zeros((n_series, n_members))
    finite = np.isfinite(sq)
    np.add.at(total, series_idx, np.where(finite, sq, 0.0).sum(axis=1))
    np.add.at(count, series_idx, finite.sum(axis=1))
    keep = np.ones((n_series, n_members), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = np.where(count > 0, total / count, np.nan)
        best = np.nanmin(np.where(np.isfinite(mse), mse, np.inf), axis=1)
    worse = np.isfinite(mse) & (mse > TRIM_MSE_RATIO * best[:, None]) & np.isfinite(best)[:, None]
    result: np.ndarray = keep & ~worse
    return result, best


def _yearly_column(stacked: pd.DataFrame, fc: pd.DataFrame, h: int, freq: str) -> np.ndarray:
    """The `yearly` member's forecasts in the row order of `fc` (nan where unavailable)."""
    year, half, recent = YEARLY_PROFILE[freq]
    ordered = stacked.sort_values("unique_id", kind="stable")  # keeps each series' order
    keys, firsts = np.unique(ordered["unique_id"].to_numpy(dtype=np.int64), return_index=True)
    arrays = np.split(ordered["y"].to_numpy(dtype=float), firsts[1:])
    series = {int(k): a for k, a in zip(keys, arrays, strict=True)}
    ids = fc["unique_id"].to_numpy().reshape(-1, h)[:, 0].astype(np.int64)
    out = np.full((len(ids), h), np.nan)
    for row, uid in enumerate(ids):
        path = yearly_profile_forecast(
            series[int(uid)], h, year=year, half_window=half, recent=recent
        )
        if path is not None:
            out[row] = path
    return out.reshape(-1)


def yearly_profile_forecast(
    y: np.ndarray,
    horizon: int,
    *,
    year: int,
    half_window: int,
    recent: int,
    max_years: int = YEARLY_MAX_YEARS,
) -> np.ndarray | None:
    """Recent level times the path demand took after the same date in earlier years.

    For each earlier year p (up to `max_years`) with enough history, take the smoothed
    demand (centred moving average of 2 * half_window + 1 periods) at the same point of the
    year as each forecast period, relative to the `recent`-period mean just before the same
    point of that year; ratios are pooled over years (sums, so quiet years do not blow up).
    This carries annual patterns (allergy season, winter) that a level model misses.

    Returns:
        `horizon` values, or None without a full earlier year around the forecast window.
    """
    n = len(y)
    csum = np.concatenate([[0.0], np.cumsum(y)])
    steps = np.arange(1, horizon + 1)
    path = np.zeros(horizon)
    before = 0.0
    used = 0
    for p in range(1, max_years + 1):
        base = n - 1 - year * p  # the same point of the year, p years ago
        if base - recent + 1 < 0 or base + horizon + half_window >= n:
            continue
        before += (csum[base + 1] - csum[base + 1 - recent]) / recent
        lo = base + steps - half_window
        hi = base + steps + half_window + 1
        path += (csum[hi] - csum[lo]) / (hi - lo)
        used += 1
    if used == 0 or before <= 0:
        return None
    level = (csum[n] - csum[n - recent]) / recent
    result: np.ndarray = level * path / before
    return result


def _scale(y: np.ndarray) -> float:
    """Typical period-to-period change: the mean absolute first difference (as in MASE).

    Falls back to the mean level for a constant series and to a tiny positive number for an
    all-zero one, so scaled residuals stay finite.
    """
    if len(y) >= 2:
        mad = float(np.mean(np.abs(np.diff(y))))
        if mad > 0:
            return mad
    level = float(np.mean(y)) if len(y) else 0.0
    return level if level > 0 else 1e-9


def conformal_quantiles(
    residuals: np.ndarray,
    levels: Sequence[int] = LEVELS,
    min_count: int = 50,
    points: np.ndarray | None = None,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Lower and upper quantiles of scaled residuals per horizon step, for each level.

    Args:
        residuals: (n_series, n_windows, horizon) of (actual - forecast) / scale, nan
            where a window did not exist. Without any residual, normal quantiles of a
            random walk's spread stand in.
        points: the back-test forecasts / scale, same shape. When given, the intervals
            are calibrated as they will be used, clipped at zero: demand cannot be
            negative, so where the lower bound clips to 0 a zero actual is inside, and the
            upper quantile is lowered until the clipped intervals cover `level` of the
            calibration sample (see `_clipped_upper`).
        levels: central interval coverage in percent.
        min_count: below this many residuals at a step, the step uses all steps pooled.

    Returns:
        level -> (lower, upper), each of shape (horizon,).
    """
    horizon = residuals.shape[-1]
    flat = residuals.reshape(-1, horizon)
    pooled = flat[np.isfinite(flat)]
    flat_p = None if points is None else points.reshape(-1, horizon)
    pooled_p = None if flat_p is None else flat_p[np.isfinite(flat)]
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for level in levels:
        alpha = 1 - level / 100
        lower = np.zeros(horizon)
        upper = np.zeros(horizon)
        for k in range(horizon):
            col = flat[:, k]
            ok = np.isfinite(col)
            col = col[ok]
            sample = col if len(col) >= min_count else pooled
            if flat_p is not None and pooled_p is not None:
                sample_p = flat_p[:, k][ok] if len(col) >= min_count else pooled_p
            if len(sample) == 0:
                # Nothing to calibrate on (every series too short for a back-test): assume
                # normal errors; the mean absolute change is about 0.8 sigma of a change.
                z = NormalDist().inv_cdf(1 - alpha / 2) * 1.25 * math.sqrt(k + 1)
                lower[k], upper[k] = -z, z
                continue
            lower[k], upper[k] = _split_conformal(sample, alpha)
            if flat_p is not None:
                lower[k], upper[k] = _shortest_clipped(sample, sample_p, alpha, level)
        out[level] = (lower, upper)
    return out


def _split_conformal(sample: np.ndarray, alpha: float) -> tuple[float, float]:
    # Finite-sample correction of split conformal prediction: the ceil((n+1)(1-a/2))-th
    # order statistic covers with probability >= 1 - a/2 on each side.
    n = len(sample)
    hi_q = min(1.0, math.ceil((n + 1) * (1 - alpha / 2)) / n)
    lo_q = max(0.0, math.floor((n + 1) * (alpha / 2)) / n)
    return float(np.quantile(sample, lo_q)), float(np.quantile(sample, hi_q))


#: Share of the miss probability put below the interval, tried by `_shortest_clipped`.
LOWER_TAIL_SHARES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _shortest_clipped(
    r: np.ndarray, p: np.ndarray, alpha: float, level: int
) -> tuple[float, float]:
    best = (math.inf, 0.0, 0.0)
    for share in LOWER_TAIL_SHARES:
        n = len(r)
        lo_q = max(0.0, math.floor((n + 1) * alpha * share) / n)
        lower = float(np.quantile(r, lo_q))
        upper = _clipped_upper(r, p, lower, level)
        width = float(np.mean(np.maximum(0, p + upper) - np.maximum(0, p + lower)))
        if width < best[0]:
            best = (width, lower, upper)
    return best[1], best[2]


#: Forecast-size bins of the interval calibration, and the fewest residuals per bin.
LEVEL_BINS = 3
MIN_PER_BIN = 300


def _level_edges(back_point: np.ndarray) -> np.ndarray:
    """Inner edges of up to `LEVEL_BINS` equal-count bins of scaled back-test forecasts."""
    values = back_point[np.isfinite(back_point)]
    bins = min(LEVEL_BINS, len(values) // MIN_PER_BIN)
    if bins <= 1:
        return np.array([])
    return np.unique(np.quantile(values, np.arange(1, bins) / bins))


def _clipped_upper(r: np.ndarray, p: np.ndarray, lower: float, level: int) -> float:
    """Smallest upper residual quantile at which intervals clipped at zero cover `level`.

    With scaled back-test forecast p and actual a = p + r, the interval used is
    [max(0, p + lower), max(0, p + upper)]. A zero actual is inside whenever the lower bound
    clips; a positive one needs r <= upper. Split-conformal count: at least
    ceil((n + 1) * level) of the n calibration actuals inside.
    """
    n = len(r)
    need = math.ceil((n + 1) * level / 100)
    a = p + r
    low_ok = (r >= lower) | (p + lower <= 0)
    zero_in = int(np.count_nonzero(low_ok & (a <= 1e-12)))
    positive = np.sort(r[low_ok & (a > 1e-12)])
    more = need - zero_in
    if more <= 0:
        return float(lower)
    if more > len(positive):
        return math.inf
    return float(positive[more - 1])


def _combine(results: list[_ChunkResult], uid: np.ndarray) -> np.ndarray:
    """(n_series, n_win, horizon) equal-weight combination of each series' kept members
    and, where it applies, the `group_level` member (window 0 is the forecast)."""
    member_sum = np.concatenate([r.member_sum for r in results])
    member_count = np.concatenate([r.member_count for r in results]).astype(float)
    fallback = np.concatenate([r.fallback for r in results])
    ses = np.concatenate([r.ses for r in results])
    cutoff = np.concatenate([r.cutoff for r in results])
    actual = np.concatenate([r.actual for r in results])
    best_mse = np.concatenate([r.best_mse for r in results])
    total = np.where(member_count > 0, member_sum, 0.0)
    count = member_count.copy()
    for part in GROUP_PARTS:
        level = group_level_member(uid, ses, fallback, cutoff, part=part)
        # The same guard as for the other members: left out where it fails on a series.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            level_mse = np.nanmean(((actual - level) ** 2).reshape(len(uid), -1), axis=1)
        failed = np.isfinite(level_mse) & (level_mse > TRIM_MSE_RATIO * best_mse)
        level[failed] = np.nan
        has_level = np.isfinite(level)
        total += np.where(has_level, level, 0.0)
        count += has_level
    with np.errstate(divide="ignore", invalid="ignore"):
        combo = total / count
    # No member at all: fall back to the mean of what the series has sold.
    missing = ~np.isfinite(combo)
    combo[missing] = np.broadcast_to(fallback[:, :, None], combo.shape)[missing]
    result: np.ndarray = np.nan_to_num(combo)
    return result


#: Separator of the parts of a `unique_id` of the form "<branch>/<sku>".
GROUP_SEPARATOR = "/"
#: The groups that give a `group_level` member each: series with the same last part are one
#: product at several branches. (A second member by branch, part 0, helped on the USAID
#: training months but not on the held-out year; see docs/inventory.md.)
GROUP_PARTS = (-1,)


def group_level_member(
    unique_id: np.ndarray,
    ses: np.ndarray,
    history_mean: np.ndarray,
    cutoff: np.ndarray,
    *,
    part: int = -1,
) -> np.ndarray:
    """Each series' share of its group times the group's current level.

    Series are grouped by one part of a `unique_id` of the form "<branch>/<sku>" (`part`
    -1: the SKU, so a group is one product at several branches; 0: the branch) and by
    cutoff date. Within a group of at least two series, the member is
    `history_mean_i / sum(history_mean) * sum(ses)`: the series' long-run share of the
    group's sales, applied to the group's current level (the sum of the members' SES
    levels). A shift in demand that shows across the whole group moves every member's
    forecast, while each series' own noise is averaged out of its share.

    Args:
        unique_id: (n_series,) ids.
        ses: (n_series, n_win, horizon) SES forecasts, nan where absent or not pooled.
        history_mean: (n_series, n_win) mean of each series' history up to the cutoff.
        cutoff: (n_series, n_win) last date each forecast saw (NaT where absent).

    Returns:
        (n_series, n_win, horizon), nan where a series has no group.
    """
    n_series, n_win, horizon = ses.shape
    out = np.full(ses.shape, np.nan)
    ids = np.asarray(unique_id).astype(str)
    grouped = np.char.find(ids, GROUP_SEPARATOR) >= 0
    if not grouped.any():
        return out
    key = np.array([u.split(GROUP_SEPARATOR)[part] for u in ids])
    usable = (
        grouped[:, None]
        & np.isfinite(ses).all(axis=2)
        & np.isfinite(history_mean)
        & ~np.isnat(cutoff)
    )
    rows, wins = np.nonzero(usable)
    if len(rows) == 0:
        return out
    keys = pd.DataFrame({"key": key[rows], "cutoff": cutoff[rows, wins]})
    codes = keys.groupby(["key", "cutoff"], sort=False).ngroup().to_numpy()
    n_groups = int(codes.max()) + 1
    size = np.bincount(codes, minlength=n_groups)
    mean_total = np.bincount(codes, weights=history_mean[rows, wins], minlength=n_groups)
    level_total = np.zeros((n_groups, horizon))
    np.add.at(level_total, codes, ses[rows, wins])
    ok = (size[codes] >= 2) & (mean_total[codes] > 0)
    share = np.where(ok, history_mean[rows, wins] / np.where(ok, mean_total[codes], 1.0), 0.0)
    values = share[:, None] * level_total[codes]
    out[rows[ok], wins[ok]] = values[ok]
    return out


def _assemble(results: list[_ChunkResult], classes: pd.Series, horizon: int) -> pd.DataFrame:
    if not results:
        return pd.DataFrame({c: [] for c in FORECAST_COLUMNS})
    uid = np.concatenate([r.unique_id for r in results])
    ds = np.concatenate([r.ds for r in results])
    scale = np.concatenate([r.scale for r in results])
    actual = np.concatenate([r.actual for r in results])
    combo = _combine(results, uid)
    point = combo[:, 0]
    # Every window of a series is scaled by the same full-history scale as its final
    # forecast: short early windows would give unstable scales and so inflated residuals.
    residuals = (actual[:, 1:] - combo[:, 1:]) / scale[:, None, None]
    back_point = np.where(np.isfinite(actual[:, 1:]), combo[:, 1:], np.nan) / scale[:, None, None]
    series_class = classes.reindex(uid).to_numpy()
    # Intermittent and smooth series have differently shaped errors: calibrate each group
    # on its own residuals when it has enough of them, else on all.
    groups = np.array(
        ["intermittent" if DemandClass(c).is_intermittent else "smooth" for c in series_class]
    )
    everything = conformal_quantiles(residuals, points=back_point)
    columns: dict[str, np.ndarray] = {"forecast": point}
    bounds = {f"{side}_{lv}": np.zeros_like(point) for lv in LEVELS for side in ("lo", "hi")}
    safe_scale = np.where(scale > 1e-6, scale, 0.0)
    level_now = point / np.where(scale > 1e-6, scale, 1.0)[:, None]
    for group in np.unique(groups):
        mask = groups == group
        res_g, back_g = residuals[mask], back_point[mask]
        enough = np.isfinite(res_g).sum() >= 200
        # Mondrian split by forecast size (forecast / scale): near-zero forecasts, whose
        # intervals clip at 0, have differently shaped errors from large ones.
        edges = _level_edges(back_g) if enough else np.array([])
        bin_now = np.searchsorted(edges, level_now[mask])
        bin_back = np.searchsorted(edges, back_g)
        for b in range(len(edges) + 1):
            if enough:
                in_bin = np.isfinite(res_g) & (bin_back == b)
                quantiles = conformal_quantiles(
                    np.where(in_bin, res_g, np.nan), points=np.where(in_bin, back_g, np.nan)
                )
            else:
                quantiles = everything
            here = bin_now == b
            for level in LEVELS:
                lower, upper = quantiles[level]
                s = safe_scale[mask][:, None]
                lo = np.clip(point[mask] + lower[None, :] * s, 0.0, None)
                hi = np.maximum(np.clip(point[mask] + upper[None, :] * s, 0.0, None), lo)
                for side, values in (("lo", lo), ("hi", hi)):
                    column = bounds[f"{side}_{level}"]
                    column[mask] = np.where(here, values, column[mask])
    columns.update(bounds)
    # Nested intervals: the 95% interval must contain the 80% one.
    columns["lo_95"] = np.minimum(columns["lo_95"], columns["lo_80"])
    columns["hi_95"] = np.maximum(columns["hi_95"], columns["hi_80"])
    out = pd.DataFrame(
        {
            "unique_id": np.repeat(uid, horizon),
            "ds": ds.reshape(-1),
            **{name: values.reshape(-1) for name, values in columns.items()},
        }
    )
    return out.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
