"""Command line: `python -m inventory forecast ...` and `python -m inventory bench [DIR]`.

The forecast interface is specified in docs (shared spec forecast-cli.md): exit status 0 on
success, 2 with one line on stderr for input that cannot be read.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BAD_INPUT = 2


class ProgressBar:
    """A one-line text progress bar redrawn in place on a stream (stderr by default)."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.started = time.monotonic()
        self._last = -1.0

    def __call__(self, done: int, total: int) -> None:
        """Show `done` of `total`; redraws at most every 0.2 s except at the end."""
        now = time.monotonic()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        fraction = done / total if total else 1.0
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = now - self.started
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} series {elapsed:5.1f}s{end}")
        self.stream.flush()


class _OneLineErrors(argparse.ArgumentParser):
    """Usage mistakes exit 2 with one line on stderr, like unreadable input does."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `python -m inventory`."""
    parser = _OneLineErrors(
        prog="python -m inventory", description="Demand forecasts and reorder policy."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fc = sub.add_parser("forecast", help="forecast every series of a unique_id,ds,y CSV")
    fc.add_argument("--input", required=True, type=Path, help="HISTORY.csv (unique_id,ds,y)")
    fc.add_argument("--horizon", required=True, type=int, help="periods to forecast")
    fc.add_argument("--output", required=True, type=Path, help="FORECAST.csv to write")
    fc.add_argument("--freq", choices=("D", "W", "M"), default=None, help="default: detect")
    fc.add_argument("--season-length", type=int, default=None, help="seasonal period")
    fc.add_argument("--jobs", type=int, default=None, help="worker processes (default: cores)")
    fc.add_argument("--quiet", action="store_true", help="no progress bar")
    bench = sub.add_parser("bench", help="accuracy, coverage, inventory and timing benchmark")
    bench.add_argument("dir", nargs="?", type=Path, default=None, help="demand data folder")
    bench.add_argument("--timing-series", type=int, default=10_000)
    bench.add_argument("--skip-timing", action="store_true")
    bench.add_argument("--skip-simulation", action="store_true")
    bench.add_argument("--jobs", type=int, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return EXIT_BAD_INPUT if exc.code not in (0, None) else EXIT_OK
    if args.command == "forecast":
        return _forecast(args)
    from inventory.bench import run_bench

    return run_bench(
        args.dir,
        timing_series=args.timing_series,
        skip_timing=args.skip_timing,
        skip_simulation=args.skip_simulation,
        n_jobs=args.jobs,
    )


def _forecast(args: argparse.Namespace) -> int:
    from inventory.forecast import forecast_demand
    from inventory.history import HistoryError, read_history_csv

    def fail(message: str) -> int:
        sys.stderr.write(f"error: {message}\n")
        return EXIT_BAD_INPUT

    if args.horizon < 1:
        return fail("--horizon must be at least 1")
    if args.season_length is not None and args.season_length < 1:
        return fail("--season-length must be at least 1")
    started = time.monotonic()
    try:
        history = read_history_csv(args.input)
        progress = None if args.quiet else ProgressBar("forecast")
        result = forecast_demand(
            history,
            horizon=args.horizon,
            freq=args.freq,
            season_length=args.season_length,
            n_jobs=args.jobs,
            progress=progress,
        )
    except HistoryError as exc:
        return fail(str(exc).splitlines()[0])
    try:
        out = result.copy()
        out["ds"] = out["ds"].dt.strftime("%Y-%m-%d")
        out.to_csv(args.output, index=False, float_format="%.4f")
    except OSError as exc:
        return fail(f"cannot write {args.output}: {exc.strerror or exc}")
    if not args.quiet:
        sys.stderr.write(
            f"wrote {len(result)} rows for {result['unique_id'].nunique()} series to "
            f"{args.output} in {time.monotonic() - started:.1f}s\n"
        )
    return EXIT_OK
