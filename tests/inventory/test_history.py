import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.history import (
    HistoryError,
    fill_gaps,
    infer_freq,
    prepare_history,
    trim_leading_zeros,
    validate_history,
)


def frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["unique_id", "ds", "y"])


def test_missing_column_is_rejected() -> None:
    with pytest.raises(HistoryError, match="missing column"):
        validate_history(pd.DataFrame({"unique_id": ["a"], "ds": ["2024-01-01"]}))


def test_negative_demand_is_rejected() -> None:
    with pytest.raises(HistoryError, match="negative"):
        validate_history(frame([("a", "2024-01-01", -1.0)]))


@pytest.mark.parametrize("bad", ["2024-13-01", "yesterday", "01/02/2024x"])
def test_unparseable_date_is_rejected(bad: str) -> None:
    with pytest.raises(HistoryError, match="unparseable date"):
        validate_history(frame([("a", bad, 1.0)]))


def test_non_numeric_demand_is_rejected() -> None:
    with pytest.raises(HistoryError, match="non-numeric"):
        validate_history(pd.DataFrame({"unique_id": ["a"], "ds": ["2024-01-01"], "y": ["x"]}))


def test_duplicate_periods_are_summed() -> None:
    out = validate_history(frame([("a", "2024-01-01", 1.0), ("a", "2024-01-01", 2.5)]))
    assert out["y"].tolist() == [3.5]


@pytest.mark.parametrize(
    ("dates", "freq"),
    [
        (["2024-01-01", "2024-01-02", "2024-01-05"], "D"),
        (["2024-01-01", "2024-01-15", "2024-02-05"], "W"),
        (["2024-01-01", "2024-02-01", "2024-05-01"], "M"),
    ],
)
def test_frequency_is_detected(dates: list[str], freq: str) -> None:
    assert infer_freq(pd.Series(pd.to_datetime(dates))) == freq


def test_missing_months_are_zero() -> None:
    filled, freq = prepare_history(
        frame([("a", "2024-01-01", 1.0), ("a", "2024-04-01", 2.0), ("b", "2024-02-01", 3.0)])
    )
    assert freq == "M"
    a = filled[filled["unique_id"] == "a"]
    assert a["ds"].dt.strftime("%Y-%m-%d").tolist() == [
        "2024-01-01",
        "2024-02-01",
        "2024-03-01",
        "2024-04-01",
    ]
    assert a["y"].tolist() == [1.0, 0.0, 0.0, 2.0]
    assert filled[filled["unique_id"] == "b"]["y"].tolist() == [3.0]


def test_weekly_gaps_keep_the_weekday() -> None:
    filled, freq = prepare_history(frame([("a", "2024-01-03", 1.0), ("a", "2024-01-24", 2.0)]))
    assert freq == "W"
    assert filled["ds"].dt.dayofweek.unique().tolist() == [2]
    assert filled["y"].tolist() == [1.0, 0.0, 0.0, 2.0]


def test_monthly_data_must_be_month_starts() -> None:
    with pytest.raises(HistoryError, match="first day"):
        prepare_history(frame([("a", "2024-01-01", 1.0), ("a", "2024-02-15", 1.0)]), "M")


def test_trim_leading_zeros_keeps_the_minimum() -> None:
    filled, _ = prepare_history(
        frame([("a", f"2024-01-0{d}", y) for d, y in [(1, 0.0), (2, 0.0), (3, 4.0), (4, 0.0)]])
    )
    assert trim_leading_zeros(filled)["y"].tolist() == [4.0, 0.0]
    zeros, _ = prepare_history(frame([("z", "2024-01-01", 0.0), ("z", "2024-01-02", 0.0)]))
    assert len(trim_leading_zeros(zeros, min_length=1)) == 1


@st.composite
def daily_histories(draw: st.DrawFn) -> pd.DataFrame:
    rows = []
    for uid in draw(st.lists(st.sampled_from("abcde"), min_size=1, max_size=4, unique=True)):
        days = draw(st.lists(st.integers(0, 60), min_size=1, max_size=15, unique=True))
        for day in days:
            y = draw(st.floats(0, 1000, allow_nan=False))
            rows.append((uid, (pd.Timestamp("2024-01-01") + pd.Timedelta(days=day)), y))
    return pd.DataFrame(rows, columns=["unique_id", "ds", "y"])


@settings(max_examples=60, deadline=None)
@given(daily_histories())
def test_fill_gaps_preserves_totals_and_makes_series_contiguous(history: pd.DataFrame) -> None:
    filled = fill_gaps(validate_history(history), "D")
    assert filled["y"].sum() == pytest.approx(history["y"].sum())
    assert (filled["y"] >= 0).all()
    for uid, group in filled.groupby("unique_id"):
        original = history[history["unique_id"] == uid]
        assert group["ds"].min() == original["ds"].min()
        assert group["ds"].max() == original["ds"].max()
        assert (group["ds"].diff().dropna() == pd.Timedelta(days=1)).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e6, -1e-6), min_size=1, max_size=5))
def test_any_negative_value_is_rejected(negatives: list[float]) -> None:
    rows = [("a", f"2024-01-{i + 1:02d}", v) for i, v in enumerate(negatives)]
    with pytest.raises(HistoryError):
        validate_history(frame(rows))
