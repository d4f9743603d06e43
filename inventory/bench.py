"""`python -m inventory bench [DIR]`: accuracy, coverage, inventory and timing figures."""

from __future__ import annotations

from pathlib import Path


def run_bench(
    data_dir: Path | None,
    *,
    timing_series: int = 10_000,
    skip_timing: bool = False,
    skip_simulation: bool = False,
    n_jobs: int | None = None,
) -> int:
    """Run the benchmark and print its figures; returns the exit status."""
    raise NotImplementedError
