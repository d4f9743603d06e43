"""Command line: `python -m routing solve INSTANCE` and `python -m routing bench [DIR]`.

The `solve` interface follows docs/spec routing-cli.md exactly: one JSON object on stdout,
exit status 2 with a one-line message on stderr for input that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from routing.instances import InstanceError, load_instance
from routing.matrix import MatrixError
from routing.solve import ENGINES, solve

logger = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT_S = 10.0
_IMPORTED_AT = time.monotonic()


def _seconds_since_process_start() -> float:
    """Wall-clock age of this process (interpreter start-up included), Linux /proc if any."""
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED_AT


def _display_id(stop_id: str, numeric: bool) -> str | int:
    return int(stop_id) if numeric and stop_id.lstrip("-").isdigit() else stop_id


def _fail(message: str) -> int:
    print(f"routing: error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr)
    return 2


def _solve_command(args: argparse.Namespace) -> int:
    try:
        instance = load_instance(args.instance)
    except InstanceError as err:
        return _fail(str(err))
    # The limit covers the whole process: keep back what start-up used and time to print.
    budget = args.time_limit - _seconds_since_process_start() - 0.05
    try:
        plan = solve(
            instance.problem,
            time_limit=max(0.1, budget),
            seed=args.seed,
            provider=instance.provider,
        )
    except MatrixError as err:
        return _fail(str(err))
    scale = plan.scale
    distance = plan.distance_m / scale
    output = {
        "routes": [
            [_display_id(s, instance.numeric_ids) for s in route.stop_ids] for route in plan.routes
        ],
        "distance": round(distance, 1) if scale == 10 else float(distance),
        "vehicles": len(plan.routes),
        "unserved": [_display_id(s, instance.numeric_ids) for s in plan.unserved_ids()],
        "feasible": plan.is_feasible(),
        "seconds": round(_seconds_since_process_start(), 3),
    }
    print(json.dumps(output))
    return 0


def _bench_command(args: argparse.Namespace) -> int:
    from routing.bench import run_bench

    root = Path(args.dir)
    if not root.is_dir():
        return _fail(f"benchmark folder {root} does not exist")
    run_bench(
        root,
        time_limit=args.time_limit,
        seed=args.seed,
        families=args.family,
        instances=args.instances,
        reference=not args.no_reference,
        engines=args.engines,
        workers=args.workers,
    )
    return 0


def _default_bench_dir() -> str:
    return str(Path(__file__).resolve().parents[1] / "tests" / "data" / "routing")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="python -m routing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    solve_parser = commands.add_parser("solve", help="solve one instance, print plan JSON")
    solve_parser.add_argument("instance", help="Solomon, VRPLIB or JSON problem file")
    solve_parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S)
    solve_parser.add_argument("--seed", type=int, default=0)
    solve_parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    solve_parser.set_defaults(handler=_solve_command)

    bench_parser = commands.add_parser("bench", help="run a benchmark folder, print a table")
    bench_parser.add_argument("dir", nargs="?", default=_default_bench_dir())
    bench_parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_S)
    bench_parser.add_argument("--seed", type=int, default=0)
    bench_parser.add_argument("--family", nargs="+", help="only these families (folder names)")
    bench_parser.add_argument("--instances", nargs="+", help="only these instance names")
    bench_parser.add_argument(
        "--no-reference", action="store_true", help="skip the PyVRP reference runs"
    )
    bench_parser.add_argument(
        "--engines", nargs="+", choices=ENGINES, help="force engines (default: automatic)"
    )
    bench_parser.add_argument("--workers", type=int, default=2, help="engine processes")
    bench_parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    bench_parser.set_defaults(handler=_bench_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.time_limit <= 0:
        return _fail("--time-limit must be positive")
    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    status: int = args.handler(args)
    return status
