"""`solve`: run the engines, check every plan independently, return the best feasible one.

Portfolio (chosen by measurement, see docs/routing.md):
- Plain problems (no breaks, one window per stop, no pins or started routes): PyVRP and
  OR-Tools (parallel cheapest insertion + tabu search, the best OR-Tools variant measured)
  run side by side, one process each; above `ORTOOLS_MAX_PLAIN_STOPS` stops, PyVRP runs
  with two seeds instead.
- Problems PyVRP cannot express: the hybrid engine (PyVRP on a relaxed problem, repaired
  and improved by OR-Tools) and OR-Tools with tabu search.
Every engine's routes go through `routing.check.evaluate`; the plan with no violations and
the lowest cost wins.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from typing import Any

from routing._model import EngineProblem, EngineRoutes, build_engine_problem
from routing.check import evaluate
from routing.matrix import MatrixProvider, build_matrix
from routing.problem import RoutingProblem, StartedRoute
from routing.solution import RoutePlan

logger = logging.getLogger(__name__)

#: OR-Tools variants by name: (first solution strategy, local search metaheuristic).
ORTOOLS_VARIANTS = {
    "ortools": ("PARALLEL_CHEAPEST_INSERTION", "GUIDED_LOCAL_SEARCH"),
    "ortools-pca": ("PATH_CHEAPEST_ARC", "GUIDED_LOCAL_SEARCH"),
    "ortools-savings": ("SAVINGS", "GUIDED_LOCAL_SEARCH"),
    "ortools-sa": ("PARALLEL_CHEAPEST_INSERTION", "SIMULATED_ANNEALING"),
    "ortools-tabu": ("PARALLEL_CHEAPEST_INSERTION", "TABU_SEARCH"),
}
ENGINES = ("pyvrp", "pyvrp-soft", "hybrid", *ORTOOLS_VARIANTS)

#: Share of the hybrid engine's time for PyVRP on the relaxed problem; OR-Tools gets the rest.
HYBRID_PYVRP_SHARE = 0.4

#: Plain problems up to this many stops run OR-Tools beside PyVRP; bigger ones run PyVRP twice.
ORTOOLS_MAX_PLAIN_STOPS = 300


#: Niceness of secondary engine processes: on an idle core they run at full speed, on a busy
#: machine they yield to the primary engine instead of slowing it down. Measured on the
#: shared 2-core box: without this, two PyVRP processes each got ~2/3 of the iterations of a
#: lone PyVRP and the best of the two was 3% worse than it on 1,000-2,000 stop days at 15 s.
SECONDARY_NICENESS = 10


@dataclass(frozen=True)
class _Run:
    engine: str
    seed: int
    primary: bool = True


def _run_engine(
    run: _Run, ep: EngineProblem, deadline: float, initial: EngineRoutes | None
) -> EngineRoutes | None:
    if run.engine in ("pyvrp", "pyvrp-soft"):
        from routing._pyvrp import solve_pyvrp

        soft = run.engine == "pyvrp-soft"
        return solve_pyvrp(ep, deadline=deadline, seed=run.seed, soft_mandatory=soft)
    from routing._ortools import OrToolsConfig, solve_ortools

    if run.engine == "hybrid":
        return _run_hybrid(run, ep, deadline, initial)

    first_solution, metaheuristic = ORTOOLS_VARIANTS[run.engine]
    config = OrToolsConfig(first_solution=first_solution, metaheuristic=metaheuristic)
    return solve_ortools(ep, deadline=deadline, config=config, initial=initial)


def _run_hybrid(
    run: _Run, ep: EngineProblem, deadline: float, initial: EngineRoutes | None
) -> EngineRoutes | None:
    """PyVRP plans a relaxed problem, OR-Tools repairs and improves the plan for real.

    With driver breaks, OR-Tools 9.15 fails to restore a warm start (status FAIL: the break
    intervals are not part of the routes it reads), so PyVRP gets the whole time and its
    routes are returned as they are; the checker then decides whether they hold.
    """
    from routing._model import relax_for_pyvrp
    from routing._ortools import solve_ortools
    from routing._pyvrp import solve_pyvrp

    relaxed = relax_for_pyvrp(ep)
    if relaxed.pyvrp_blockers():
        return solve_ortools(ep, deadline=deadline, initial=initial)
    has_breaks = any(v.rest for v in ep.vehicles)
    share = 1.0 if has_breaks else HYBRID_PYVRP_SHARE
    split = time.monotonic() + share * (deadline - time.monotonic())
    seeded = solve_pyvrp(relaxed, deadline=split, seed=run.seed, soft_mandatory=True)
    if has_breaks:
        return seeded
    improved = solve_ortools(ep, deadline=deadline, initial=seeded or initial)
    return improved if improved is not None else seeded


def _child(
    conn: Connection,
    run: _Run,
    ep: EngineProblem,
    deadline: float,
    initial: EngineRoutes | None,
) -> None:
    try:
        if not run.primary:
            os.nice(SECONDARY_NICENESS)
        conn.send(("ok", _run_engine(run, ep, deadline, initial)))
    except Exception as err:  # noqa: BLE001 - reported to the parent, which logs it
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def _run_portfolio(
    runs: Sequence[_Run],
    ep: EngineProblem,
    deadline: float,
    give_up: float,
    late_limit: float,
    initial: EngineRoutes | None,
) -> list[tuple[str, EngineRoutes]]:
    """Run engines in forked processes; collect answers until `give_up`, or - only if none
    has produced a plan by then (an overloaded machine) - until `late_limit`."""
    if len(runs) == 1:
        routes = _run_engine(runs[0], ep, deadline, initial)
        return [] if routes is None else [(runs[0].engine, routes)]
    ctx = multiprocessing.get_context("fork")
    pending: dict[Connection, tuple[_Run, Any]] = {}
    for run in runs:
        parent_end, child_end = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_child, args=(child_end, run, ep, deadline, initial), daemon=True
        )
        process.start()
        child_end.close()
        pending[parent_end] = (run, process)
    results: list[tuple[str, EngineRoutes]] = []
    while pending:
        until = give_up if results else late_limit
        ready = wait(list(pending), timeout=max(0.0, until - time.monotonic()))
        if not ready:
            break
        for conn in ready:
            assert isinstance(conn, Connection)
            run, process = pending.pop(conn)
            try:
                status, payload = conn.recv()
            except EOFError:
                logger.warning("engine %s died without an answer", run.engine)
                continue
            finally:
                conn.close()
                process.join(timeout=0.5)
            if status == "ok" and payload is not None:
                results.append((run.engine, payload))
            elif status == "error":
                logger.warning("engine %s failed: %s", run.engine, payload)
    for conn, (run, process) in pending.items():
        logger.warning("engine %s missed its deadline", run.engine)
        conn.close()
        process.kill()
        process.join()
    return results


def _portfolio(
    ep: EngineProblem, seed: int, workers: int, engines: Sequence[str] | None
) -> list[_Run]:
    if engines:
        unknown = set(engines) - set(ENGINES)
        if unknown:
            raise ValueError(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
        chosen = list(engines)
    else:
        blockers = ep.pyvrp_blockers()
        if blockers:
            logger.info("OR-Tools only (PyVRP cannot express: %s)", ", ".join(blockers))
            chosen = ["hybrid", "ortools-tabu"]
        elif len(ep.stops) <= ORTOOLS_MAX_PLAIN_STOPS:
            chosen = ["pyvrp", "ortools-tabu"]
        else:
            # Measured: on big plain days OR-Tools finds no (or far worse) plans in the time
            # limit, so the second core runs PyVRP with another seed instead - with mandatory
            # stops as huge prizes, so that an over-full day still gets a plan.
            chosen = ["pyvrp", "pyvrp-soft"]
        chosen = chosen[: max(1, workers)]
    if any(e.startswith("pyvrp") for e in chosen) and ep.pyvrp_blockers():
        raise ValueError(f"PyVRP cannot express: {', '.join(ep.pyvrp_blockers())}")
    return [_Run(engine, seed + k, primary=k == 0) for k, engine in enumerate(chosen)]


def _seconds(time_limit: float | timedelta) -> float:
    seconds = (
        time_limit.total_seconds() if isinstance(time_limit, timedelta) else float(time_limit)
    )
    if seconds <= 0:
        raise ValueError("time_limit must be positive")
    return seconds


def solve(
    problem: RoutingProblem,
    *,
    time_limit: float | timedelta,
    seed: int = 0,
    provider: MatrixProvider | None = None,
    initial: RoutePlan | None = None,
    workers: int = 2,
    engines: Sequence[str] | None = None,
) -> RoutePlan:
    """Plan routes for `problem` within `time_limit` of wall-clock time.

    Args:
        problem: the deliveries, vehicles and any routes already under way.
        time_limit: wall-clock budget for the whole call (matrix, search and checks).
        seed: random seed for the engines (runs differ only through time-limit effects).
        provider: travel-matrix provider; `routing.matrix.default_provider` when None.
        initial: a previous plan to warm-start OR-Tools from (re-optimisation).
        workers: engine processes to run side by side (1 runs one engine in this process).
        engines: force engines by name (see ENGINES); default picks by problem features.

    Returns:
        The best plan found. It is always checked by `routing.check`; look at
        `plan.is_feasible()`, `plan.violations` and `plan.unserved` rather than expecting
        an exception when the problem cannot be fully served.
    """
    started_at = time.monotonic()
    deadline = started_at + _seconds(time_limit)
    places, matrix = build_matrix(problem, provider)
    ep = build_engine_problem(problem, places, matrix)
    # Keep back time for checking plans and returning; more on big instances.
    reserve = min(0.6, 0.1 + 0.03 * (deadline - started_at) + 0.0001 * len(ep.stops))
    engine_deadline = deadline - reserve
    runs = _portfolio(ep, seed, workers, engines)
    warm = _initial_routes(ep, initial) if initial is not None else None
    # On an overloaded machine a late plan beats none: wait up to a quarter more for one.
    late_limit = deadline + min(2.0, 0.25 * (deadline - started_at))
    results = _run_portfolio(runs, ep, engine_deadline, deadline - reserve / 2, late_limit, warm)

    plans = [
        evaluate(
            problem,
            matrix,
            [(ep.vehicles[v].id, [ep.stops[s].id for s in stops]) for v, stops in routes],
            places=places,
            engine=engine,
        )
        for engine, routes in results
    ]
    if not plans:
        logger.warning("no engine produced a plan for %s", problem.name or "problem")
        plans = [evaluate(problem, matrix, [], places=places, engine="none")]
    best = min(plans, key=lambda p: (len(p.violations) > 0, len(p.violations), p.cost))
    for plan in plans:
        logger.info(
            "engine %s: cost %.3f, distance %d, %d violations%s",
            plan.engine,
            plan.cost,
            plan.distance_m,
            len(plan.violations),
            " (chosen)" if plan is best else "",
        )
    return best


def _initial_routes(ep: EngineProblem, plan: RoutePlan) -> EngineRoutes:
    vehicle_index = {v.id: i for i, v in enumerate(ep.vehicles)}
    stop_index = {s.id: i for i, s in enumerate(ep.stops)}
    routes: EngineRoutes = []
    for route in plan.routes:
        v = vehicle_index.get(route.vehicle_id)
        stops = [stop_index[s] for s in route.stop_ids if s in stop_index]
        if v is None:
            continue
        allowed = [s for s in stops if v in (ep.stops[s].allowed or (v,))]
        if allowed:
            routes.append((v, allowed))
    return routes


def reoptimise(
    problem: RoutingProblem,
    current: RoutePlan,
    progress: Sequence[StartedRoute],
    *,
    time_limit: float | timedelta,
    seed: int = 0,
    provider: MatrixProvider | None = None,
    workers: int = 2,
) -> RoutePlan:
    """Re-plan the rest of the day, warm-started from `current`.

    Vans listed in `progress` are on the road: they start from their reported position and
    time, their delivered stops are dropped and the stops still in their van stay with them
    (when `StartedRoute.on_board` is empty it is taken from the van's route in `current`).
    Everything else may be re-assigned.

    Args:
        problem: the day's problem (without started routes).
        current: the plan being driven.
        progress: one entry per van that has left.
        time_limit: wall-clock budget.
        seed: random seed.
        provider: travel-matrix provider.
        workers: engine processes.
    """
    started: list[StartedRoute] = []
    for entry in progress:
        on_board = entry.on_board
        if not on_board:
            route = current.route_of(entry.vehicle_id)
            done = set(entry.done)
            on_board = tuple(s for s in (route.stop_ids if route else ()) if s not in done)
        started.append(dataclasses.replace(entry, on_board=on_board))
    replanned = dataclasses.replace(problem, started=tuple(started))
    return solve(
        replanned,
        time_limit=time_limit,
        seed=seed,
        provider=provider,
        initial=current,
        workers=workers,
    )
