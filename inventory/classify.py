"""Demand classes after Syntetos and Boylan (2005): smooth, erratic, intermittent, lumpy.

ADI is the average inter-demand interval (periods per period with demand); CV² is the
squared coefficient of variation of the non-zero demand sizes. The cut-offs 1.32 and 0.49
are the published ones: above ADI 1.32 Croston-type methods beat exponential smoothing.
"""

from __future__ import annotations

import logging
from enum import StrEnum

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

ADI_CUTOFF = 1.32
CV2_CUTOFF = 0.49


class DemandClass(StrEnum):
    """Syntetos–Boylan demand class, plus `NONE` for a series without any demand."""

    SMOOTH = "smooth"
    ERRATIC = "erratic"
    INTERMITTENT = "intermittent"
    LUMPY = "lumpy"
    NONE = "none"

    @property
    def is_intermittent(self) -> bool:
        """True for the classes with many zero periods (intermittent and lumpy)."""
        return self in (DemandClass.INTERMITTENT, DemandClass.LUMPY)


def classify_values(y: np.ndarray) -> tuple[float, float, DemandClass]:
    """ADI, CV² and class of one series of per-period demand (zeros included).

    An all-zero series has ADI = inf, CV² = nan and class `NONE`; a single non-zero period
    has CV² = 0.
    """
    values = np.asarray(y, dtype=float)
    nonzero = values[values > 0]
    if len(nonzero) == 0:
        return float("inf"), float("nan"), DemandClass.NONE
    adi = len(values) / len(nonzero)
    mean = float(nonzero.mean())
    cv2 = float(nonzero.var() / mean**2) if len(nonzero) > 1 else 0.0
    return adi, cv2, _class_of(adi, cv2)


def _class_of(adi: float, cv2: float) -> DemandClass:
    if adi < ADI_CUTOFF:
        return DemandClass.SMOOTH if cv2 < CV2_CUTOFF else DemandClass.ERRATIC
    return DemandClass.INTERMITTENT if cv2 < CV2_CUTOFF else DemandClass.LUMPY


def classify_demand(history: pd.DataFrame) -> pd.DataFrame:
    """Classify every series of a gap-filled long frame.

    Args:
        history: columns `unique_id`, `y` with missing periods already filled with zeros
            (see `inventory.history.prepare_history`); leading zeros count as no demand.

    Returns:
        One row per series: `unique_id`, `adi`, `cv2`, `demand_class` (a `DemandClass`
        value as string).
    """
    y = history["y"].to_numpy(dtype=float)
    uid = history["unique_id"].to_numpy()
    codes, uniques = pd.factorize(uid, sort=False)
    n_series = len(uniques)
    length = np.bincount(codes, minlength=n_series).astype(float)
    positive = y > 0
    count = np.bincount(codes, weights=positive.astype(float), minlength=n_series)
    total = np.bincount(codes, weights=y, minlength=n_series)
    total_sq = np.bincount(codes, weights=y * y, minlength=n_series)
    with np.errstate(divide="ignore", invalid="ignore"):
        adi = np.where(count > 0, length / count, np.inf)
        mean = total / count
        var = total_sq / count - mean * mean
        cv2 = np.where(count > 1, np.maximum(var, 0.0) / (mean * mean), 0.0)
    cv2 = np.where(count > 0, cv2, np.nan)
    classes = [
        DemandClass.NONE.value if c == 0 else _class_of(a, v).value
        for a, v, c in zip(adi, cv2, count, strict=True)
    ]
    return pd.DataFrame(
        {"unique_id": np.asarray(uniques), "adi": adi, "cv2": cv2, "demand_class": classes}
    )
