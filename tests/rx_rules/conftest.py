"""Fixtures for the pure engine tests: the formulary read from the project's CSV files."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from pharmacy.services.rx_rules import FormularyView, ValidationReport, validate_bundle
from pharmacy.services.rx_rules.formulary_csv import read_formulary_csv

from .builders import NOW


@pytest.fixture(scope="session")
def formulary() -> FormularyView:
    return read_formulary_csv()


Check = Callable[..., ValidationReport]


@pytest.fixture()
def check(formulary: FormularyView) -> Check:
    """``check(bundle, now=NOW)`` -> the report for a bundle (dict, str or bytes)."""

    def run(bundle: Any, *, now: datetime = NOW) -> ValidationReport:
        return validate_bundle(bundle, formulary, now=now)

    return run
