"""Fixtures for the inventory tests: small real series from tests/data/inventory."""

from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "inventory"


@pytest.fixture(scope="session")
def usaid_small() -> pd.DataFrame:
    """Six monthly USAID series (four complete, two short with gaps)."""
    return pd.read_csv(DATA / "usaid_monthly_small.csv")


@pytest.fixture(scope="session")
def pharma_small() -> pd.DataFrame:
    """Three daily pharmacy series, 2018-01 .. 2018-06."""
    return pd.read_csv(DATA / "pharma_daily_small.csv")
