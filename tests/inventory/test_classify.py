import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inventory.classify import DemandClass, classify_demand, classify_values


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5, 6, 5, 6, 5, 6], DemandClass.SMOOTH),
        ([1, 20, 2, 30, 1, 25], DemandClass.ERRATIC),
        ([0, 0, 5, 0, 0, 6, 0, 0, 5], DemandClass.INTERMITTENT),
        ([0, 0, 1, 0, 0, 40, 0, 0, 2], DemandClass.LUMPY),
        ([0, 0, 0], DemandClass.NONE),
    ],
)
def test_known_classes(values: list[float], expected: DemandClass) -> None:
    assert classify_values(np.array(values, dtype=float))[2] is expected


def test_cut_offs_are_syntetos_boylan() -> None:
    # ADI exactly 1.32 is intermittent; just below is not.
    assert classify_values(np.array([1.0] * 100 + [0.0] * 32))[2] is DemandClass.INTERMITTENT
    assert classify_values(np.array([1.0] * 100 + [0.0] * 31))[2] is DemandClass.SMOOTH


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.just(0.0), st.floats(0.01, 500)), min_size=1, max_size=30),
        min_size=1,
        max_size=6,
    )
)
def test_frame_classification_matches_single_series(series: list[list[float]]) -> None:
    rows = [
        (f"s{i}", pd.Timestamp("2024-01-01") + pd.Timedelta(days=t), v)
        for i, values in enumerate(series)
        for t, v in enumerate(values)
    ]
    out = classify_demand(pd.DataFrame(rows, columns=["unique_id", "ds", "y"]))
    assert len(out) == len(series)
    for i, values in enumerate(series):
        adi, cv2, cls = classify_values(np.array(values))
        row = out[out["unique_id"] == f"s{i}"].iloc[0]
        assert row["demand_class"] == cls.value
        assert row["adi"] == pytest.approx(adi)
        if cls is not DemandClass.NONE:
            assert row["cv2"] == pytest.approx(cv2, rel=1e-6, abs=1e-6)
            assert adi >= 1.0
