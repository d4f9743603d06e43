"""`python -m routing bench`: solve a folder of benchmark instances and compare.

The folder is laid out like the project's benchmark data: one sub-folder per family
(`solomon/`, `homberger/`, `cvrp_x/`, `city/`, ...) and a `bks.csv` with the best-known
distance of each instance. Instances without a best-known value (the city days) are compared
against PyVRP run as a reference solver, in the same run, with the same time limit.
"""

from __future__ import annotations

import csv
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from routing._model import build_engine_problem
from routing.check import evaluate
from routing.instances import Instance, InstanceError, load_instance
from routing.matrix import build_matrix
from routing.solve import solve

logger = logging.getLogger(__name__)

FAMILY_ORDER = ("solomon", "homberger", "cvrp_x", "city")
SUFFIXES = (".txt", ".vrp", ".json")


@dataclass(frozen=True)
class BenchCase:
    """One instance to run: where it is and what to compare against."""

    name: str
    family: str
    path: Path
    bks: float | None


@dataclass(frozen=True)
class BenchRow:
    """One line of the result table."""

    case: BenchCase
    vehicles: int
    distance: float
    reference: float | None
    reference_label: str
    seconds: float
    feasible: bool
    unserved: int

    @property
    def gap_percent(self) -> float | None:
        """Gap of our distance to the reference, in percent."""
        if self.reference is None or self.reference <= 0:
            return None
        return 100.0 * (self.distance - self.reference) / self.reference


def discover(root: Path) -> list[BenchCase]:
    """Every instance under `root`, with its best-known distance when bks.csv has one."""
    known: dict[Path, tuple[str, str, float]] = {}
    bks_file = root / "bks.csv"
    if bks_file.exists():
        with bks_file.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                path = (root / row["file"]).resolve()
                known[path] = (row["instance"], row["family"], float(row["distance"]))
    cases = []
    for family_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(family_dir.iterdir()):
            if file.suffix not in SUFFIXES:
                continue
            name, family, bks = known.get(file.resolve(), (file.stem, family_dir.name, None))
            cases.append(BenchCase(name, family, file, bks))
    order = {family: i for i, family in enumerate(FAMILY_ORDER)}
    cases.sort(key=lambda c: (order.get(c.family, len(order)), c.family, c.name))
    return cases


def _reference(instance: Instance, time_limit: float, seed: int) -> tuple[float, bool, float]:
    """PyVRP alone on the same instance and time limit: (distance, feasible, seconds)."""
    from routing._pyvrp import solve_pyvrp

    started = time.monotonic()
    places, matrix = build_matrix(instance.problem, instance.provider)
    ep = build_engine_problem(instance.problem, places, matrix)
    routes = solve_pyvrp(ep, deadline=started + time_limit, seed=seed) or []
    plan = evaluate(
        instance.problem,
        matrix,
        [(ep.vehicles[v].id, [ep.stops[s].id for s in stops]) for v, stops in routes],
        places=places,
        engine="pyvrp-reference",
    )
    return plan.distance_m / plan.scale, plan.is_feasible(), time.monotonic() - started


def run_bench(
    root: Path,
    *,
    time_limit: float,
    seed: int = 0,
    families: Sequence[str] | None = None,
    instances: Sequence[str] | None = None,
    reference: bool = True,
    engines: Sequence[str] | None = None,
    workers: int = 2,
    out: TextIO = sys.stdout,
) -> list[BenchRow]:
    """Solve the selected instances and print the table as rows complete.

    Args:
        root: benchmark folder.
        time_limit: seconds per instance (and for the reference solver).
        seed: random seed.
        families: only these families (folder names).
        instances: only these instance names.
        reference: run PyVRP as the reference where no best-known value exists.
        engines: force these engines (see `routing.solve.ENGINES`), for comparisons.
        workers: engine processes per solve.
        out: where the table goes.
    """
    cases = discover(root)
    if families:
        cases = [c for c in cases if c.family in families]
    if instances:
        cases = [c for c in cases if c.name in instances]
    header = (
        f"{'instance':<14} {'family':<10} {'vehicles':>8} {'distance':>11} {'reference':>11}"
        f" {'gap %':>7} {'seconds':>8} {'feasible':>8}"
    )
    engine_note = ",".join(engines) if engines else "auto"
    print(
        f"# time limit {time_limit:g} s per instance, seed {seed}, engines {engine_note},"
        f" {workers} worker(s)",
        file=out,
    )
    print(header, file=out, flush=True)
    rows: list[BenchRow] = []
    for case in cases:
        try:
            instance = load_instance(case.path)
        except InstanceError as err:
            print(f"{case.name:<14} {case.family:<10} unreadable: {err}", file=out, flush=True)
            continue
        started = time.monotonic()
        plan = solve(
            instance.problem,
            time_limit=time_limit,
            seed=seed,
            provider=instance.provider,
            engines=engines,
            workers=workers,
        )
        seconds = time.monotonic() - started
        ref_value, ref_label = case.bks, "bks"
        ref_note = ""
        if ref_value is None and reference:
            ref_value, ref_feasible, ref_seconds = _reference(instance, time_limit, seed)
            ref_label = "pyvrp"
            ref_note = f"  (pyvrp {ref_seconds:.1f} s, feasible={ref_feasible})"
        row = BenchRow(
            case=case,
            vehicles=len(plan.routes),
            distance=plan.distance_m / plan.scale,
            reference=ref_value,
            reference_label=ref_label,
            seconds=seconds,
            feasible=plan.is_feasible(),
            unserved=len(plan.unserved),
        )
        rows.append(row)
        gap = row.gap_percent
        print(
            f"{case.name:<14} {case.family:<10} {row.vehicles:>8} {row.distance:>11.1f}"
            f" {(f'{ref_value:.1f}' if ref_value is not None else '-'):>11}"
            f" {(f'{gap:.2f}' if gap is not None else '-'):>7} {seconds:>8.1f}"
            f" {str(row.feasible).lower():>8}  [{plan.engine}]{ref_note}",
            file=out,
            flush=True,
        )
    print("", file=out)
    print(
        f"{'family':<10} {'instances':>9} {'mean gap %':>10} {'vs':>6} {'feasible':>9}", file=out
    )
    for family in dict.fromkeys(r.case.family for r in rows):
        members = [r for r in rows if r.case.family == family]
        gaps = [g for r in members if (g := r.gap_percent) is not None]
        mean = f"{statistics.fmean(gaps):.2f}" if gaps else "-"
        label = members[0].reference_label
        feasible = sum(r.feasible for r in members)
        print(
            f"{family:<10} {len(members):>9} {mean:>10} {label:>6} {feasible:>5}/{len(members)}",
            file=out,
            flush=True,
        )
    return rows
