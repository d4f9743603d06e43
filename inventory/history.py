"""Validate and gap-fill long-format demand history (`unique_id`, `ds`, `y`).

Everything downstream (classification, forecasting, back-testing) assumes the frame this
module returns: one row per series and period, no gaps between a series' first and last
period (a missing period is zero demand), sorted by `unique_id` then `ds`, `y` float >= 0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("unique_id", "ds", "y")

#: Supported frequencies and the pandas offset used for each. Weekly periods are labelled
#: by the week's first day, so the anchor depends on the data (see `pandas_freq`).
FREQUENCIES = ("D", "W", "M")

#: Default seasonal period per frequency (a week of days, a year of weeks or months).
DEFAULT_SEASON_LENGTH = {"D": 7, "W": 52, "M": 12}


class HistoryError(ValueError):
    """Demand history that cannot be used: the message is one line, fit for a CLI."""


def read_history_csv(path: str | Path) -> pd.DataFrame:
    """Read a `unique_id,ds,y` CSV and validate it (see `validate_history`).

    Raises:
        HistoryError: the file is missing, unreadable or fails validation.
    """
    try:
        raw = pd.read_csv(path, dtype={"unique_id": str}, keep_default_na=False)
    except FileNotFoundError as exc:
        raise HistoryError(f"cannot read {path}: no such file") from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HistoryError(f"cannot read {path}: {first_line}") from exc
    return validate_history(raw)


def validate_history(history: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise a long-format sales frame.

    Returns a new frame with exactly the columns `unique_id` (str), `ds` (datetime64, no
    time of day) and `y` (float64), sorted, with duplicate periods summed.

    Raises:
        HistoryError: missing columns, empty ids, unparseable dates, non-numeric, missing
            or negative demand.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in history.columns]
    if missing:
        raise HistoryError(f"missing column(s): {', '.join(missing)}")
    df = pd.DataFrame(
        {
            "unique_id": history["unique_id"].astype(str).str.strip(),
            "ds": history["ds"],
            "y": history["y"],
        }
    )
    if (df["unique_id"] == "").any():
        raise HistoryError("empty unique_id")
    df["ds"] = _parse_dates(df["ds"])
    text = df["y"].astype(str).str.strip()
    if (df["y"].isna() | text.isin(["", "nan", "NaN", "None"])).any():
        raise HistoryError("missing demand value(s)")
    y = pd.to_numeric(df["y"], errors="coerce")
    if y.isna().any():
        raise HistoryError(f"non-numeric demand: {df['y'][y.isna()].iloc[0]!r}")
    if not np.isfinite(y.to_numpy(dtype=float)).all():
        raise HistoryError("non-finite demand value(s)")
    if (y < 0).any():
        row = df.loc[y < 0].iloc[0]
        raise HistoryError(f"negative demand {y[y < 0].iloc[0]} for {row['unique_id']}")
    df["y"] = y.astype(float)
    # Two rows for the same series and period (e.g. two tills) are one period's demand.
    summed = df.groupby(["unique_id", "ds"], as_index=False, sort=True)["y"].sum()
    return pd.DataFrame(summed).reset_index(drop=True)


def _parse_dates(values: pd.Series) -> pd.Series:
    if values.empty:
        return pd.Series(pd.to_datetime(values), index=values.index)
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.Series(values, index=values.index)
    else:
        text = values.astype(str).str.strip()
        parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        if parsed.isna().any():
            sample = text[parsed.isna()].iloc[0]
            raise HistoryError(f"unparseable date {sample!r} (expected ISO YYYY-MM-DD)")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    if (parsed != parsed.dt.normalize()).any():
        raise HistoryError("dates must not carry a time of day")
    return parsed.astype("datetime64[ns]")


def infer_freq(ds: pd.Series) -> str:
    """Detect the period of the data: "D", "W" or "M".

    Monthly if every date is the first of a month and all steps within a series are whole
    months; weekly if every date falls on the same weekday and steps are multiples of 7
    days; daily otherwise. A single-date history is daily.

    Raises:
        HistoryError: no dates at all.
    """
    dates = pd.DatetimeIndex(pd.to_datetime(ds)).unique().sort_values()
    if len(dates) == 0:
        raise HistoryError("no rows")
    if len(dates) == 1:
        return "D"
    if (dates.day == 1).all() and len(dates) >= 2:
        days = np.diff(dates.to_numpy().astype("datetime64[D]").astype(np.int64))
        # Consecutive month starts are 28..31 days apart; anything else is not monthly.
        if days.min() >= 28:
            return "M"
    if dates.dayofweek.nunique() == 1:
        return "W"
    return "D"


def pandas_freq(freq: str, ds: pd.Series | None = None) -> str:
    """The pandas offset alias for a D/W/M frequency (weeks anchored on the data's weekday)."""
    if freq == "D":
        return "D"
    if freq == "M":
        return "MS"
    if freq == "W":
        weekday = 0 if ds is None or ds.empty else int(pd.to_datetime(ds).iloc[0].dayofweek)
        return "W-" + ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")[weekday]
    raise HistoryError(f"unknown frequency {freq!r} (use D, W or M)")


def check_alignment(history: pd.DataFrame, freq: str) -> None:
    """Raise `HistoryError` unless every date is a valid period start for `freq`."""
    ds = history["ds"]
    if freq == "M" and (ds.dt.day != 1).any():
        raise HistoryError("monthly data must be dated on the first day of the month")
    if freq == "W" and ds.dt.dayofweek.nunique() > 1:
        raise HistoryError("weekly data must be dated on the same weekday throughout")


def fill_gaps(history: pd.DataFrame, freq: str) -> pd.DataFrame:
    """Insert zero-demand rows for missing periods between each series' first and last date.

    Args:
        history: a frame returned by `validate_history`.
        freq: "D", "W" or "M".
    """
    check_alignment(history, freq)
    if history.empty:
        return history.copy()
    ordinal = _to_ordinal(history["ds"], freq)
    codes, uniques = pd.factorize(history["unique_id"].to_numpy(), sort=True)
    start = np.full(len(uniques), np.iinfo(np.int64).max)
    end = np.full(len(uniques), np.iinfo(np.int64).min)
    np.minimum.at(start, codes, ordinal)
    np.maximum.at(end, codes, ordinal)
    lengths = end - start + 1
    total = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    y = np.zeros(total)
    y[offsets[codes] + (ordinal - start[codes])] = history["y"].to_numpy(dtype=float)
    series_of_row = np.repeat(np.arange(len(uniques)), lengths)
    ord_full = np.repeat(start, lengths) + (np.arange(total) - np.repeat(offsets, lengths))
    weekday = int(history["ds"].iloc[0].dayofweek)
    out = pd.DataFrame(
        {
            "unique_id": np.asarray(uniques)[series_of_row].astype(str),
            "ds": _from_ordinal(ord_full, freq, weekday),
            "y": y,
        }
    )
    return out


def _to_ordinal(ds: pd.Series, freq: str) -> np.ndarray:
    """Integer period numbers: consecutive periods differ by one."""
    if freq == "M":
        months: np.ndarray = ds.dt.year.to_numpy() * 12 + ds.dt.month.to_numpy() - 1
        return months.astype(np.int64)
    days = ds.to_numpy().astype("datetime64[D]").astype(np.int64)
    # All weekly dates share a weekday (checked), so integer division keeps them apart.
    return days // 7 if freq == "W" else days


def _from_ordinal(ordinal: np.ndarray, freq: str, weekday: int) -> np.ndarray:
    if freq == "M":
        return (ordinal - 1970 * 12).astype("datetime64[M]").astype("datetime64[ns]")
    if freq == "W":
        # 1970-01-01 was a Thursday (weekday 3); day 7k is a Thursday too.
        days = ordinal * 7 + (weekday - 3) % 7
        return days.astype("datetime64[D]").astype("datetime64[ns]")
    return ordinal.astype("datetime64[D]").astype("datetime64[ns]")


def prepare_history(history: pd.DataFrame, freq: str | None = None) -> tuple[pd.DataFrame, str]:
    """Validate, detect the frequency (unless given) and gap-fill in one step.

    Returns:
        The filled frame and the frequency ("D", "W" or "M").
    """
    df = validate_history(history)
    if df.empty:
        raise HistoryError("no rows")
    if freq is None:
        freq = infer_freq(df["ds"])
    elif freq not in FREQUENCIES:
        raise HistoryError(f"unknown frequency {freq!r} (use D, W or M)")
    return fill_gaps(df, freq), freq


def trim_leading_zeros(history: pd.DataFrame, min_length: int = 1) -> pd.DataFrame:
    """Drop each series' zeros before its first sale, keeping at least `min_length` periods.

    A product that has not sold yet was usually not listed yet; its leading zeros would
    drag averages down (the M5 competition scales its errors the same way).
    """
    started = history.groupby("unique_id", sort=False)["y"].cumsum().to_numpy() > 0
    from_end = history.groupby("unique_id", sort=False).cumcount(ascending=False).to_numpy()
    keep = started | (from_end < min_length)
    return history.loc[keep].reset_index(drop=True)
