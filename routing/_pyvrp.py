"""PyVRP adapter: the only module that imports `pyvrp`.

PyVRP (iterated local search in 0.14) is the stronger search on plain capacitated problems
with one time window per stop. It expresses: parcels and volume capacities, one window per
stop, service times, shifts, start/end places, cost per metre and per second, optional
stops with prizes (= drop penalties), and fridge-only stops through a second travel
profile in which non-fridge vans cannot reach them in time. It cannot express driver
breaks, several windows per stop, pinned stops or started routes; `EngineProblem.
pyvrp_blockers` lists those and `solve` then runs OR-Tools only.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

import numpy as np
from pyvrp import (
    Client,
    Depot,
    Location,
    ProblemData,
    VehicleType,
)
from pyvrp import (
    solve as pyvrp_solve,
)

from routing._model import EngineProblem, EngineRoutes
from routing.problem import Point

logger = logging.getLogger(__name__)


class _Deadline:
    """PyVRP stopping criterion on the wall clock (its MaxRuntime starts late)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, best_cost: float) -> bool:
        return time.monotonic() >= self.deadline


def _soft_prize(ep: EngineProblem) -> int:
    """A prize for mandatory stops larger than any insertion could save (cf. _ortools)."""
    max_distance_coef = max(v.distance_coef for v in ep.vehicles)
    max_duration_coef = max(v.duration_coef for v in ep.vehicles)
    longest_arc = int(ep.distance.max(initial=0))
    return 10 * (2 * longest_arc * max_distance_coef + ep.horizon_s * max_duration_coef + 1)


def to_problem_data(
    ep: EngineProblem, *, soft_mandatory: bool = False
) -> tuple[ProblemData, list[list[int]]]:
    """PyVRP data for `ep` and, per vehicle type, the engine vehicle indices it stands for.

    With `soft_mandatory`, mandatory stops become optional with a prize no route saving can
    beat, so an over-full day still yields a plan (with the stops that do not fit unserved)
    instead of no feasible solution at all.
    """
    soft_prize = _soft_prize(ep) if soft_mandatory else 0
    locations = [
        Location(p.x, p.y) if isinstance(p, Point) else Location(p.lon, p.lat) for p in ep.places
    ]
    depot_places = sorted({p for v in ep.vehicles for p in (v.start, v.end)})
    depot_of = {place: k for k, place in enumerate(depot_places)}
    depots = [Depot(place) for place in depot_places]
    horizon = ep.horizon_s
    dims = 2 if ep.uses_volume else 1
    clients = []
    for stop in ep.stops:
        early, late = stop.windows[0] if stop.windows else (0, horizon)
        clients.append(
            Client(
                stop.place,
                delivery=list(stop.demand[:dims]),
                service_duration=stop.service_s,
                tw_early=early,
                tw_late=late,
                prize=stop.penalty if stop.penalty is not None else soft_prize,
                required=stop.penalty is None and not soft_mandatory,
            )
        )
    needs_fridge_profile = any(s.fridge for s in ep.stops) and not all(
        v.fridge for v in ep.vehicles
    )
    distances: list[Any] = [ep.distance]
    durations: list[Any] = [ep.duration]
    if needs_fridge_profile:
        # Profile 1 (non-fridge vans): reaching a fridge stop takes longer than the horizon,
        # so any such visit is time-infeasible and PyVRP's search avoids it.
        cold = sorted({s.place for s in ep.stops if s.fridge})
        far_distance = ep.distance.copy()
        far_duration = ep.duration.copy()
        far_distance[:, cold] = int(ep.distance.max(initial=0)) * 10 + 1
        far_duration[:, cold] = 2 * horizon + 1
        far_distance[np.ix_(cold, cold)] = ep.distance[np.ix_(cold, cold)]
        far_duration[np.ix_(cold, cold)] = ep.duration[np.ix_(cold, cold)]
        distances.append(far_distance)
        durations.append(far_duration)
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for v, vehicle in enumerate(ep.vehicles):
        profile = 1 if needs_fridge_profile and not vehicle.fridge else 0
        key = (
            vehicle.start,
            vehicle.end,
            vehicle.earliest_s,
            vehicle.latest_s,
            vehicle.capacity[:dims],
            profile,
            vehicle.distance_coef,
            vehicle.duration_coef,
        )
        groups[key].append(v)
    vehicle_types = []
    members = []
    for key, vehicles in groups.items():
        first = ep.vehicles[vehicles[0]]
        vehicle_types.append(
            VehicleType(
                len(vehicles),
                capacity=list(first.capacity[:dims]),
                start_depot=depot_of[first.start],
                end_depot=depot_of[first.end],
                tw_early=first.earliest_s,
                tw_late=first.latest_s,
                unit_distance_cost=first.distance_coef,
                unit_duration_cost=first.duration_coef,
                profile=int(key[5]),
            )
        )
        members.append(vehicles)
    data = ProblemData(locations, clients, depots, vehicle_types, distances, durations)
    return data, members


def solve_pyvrp(
    ep: EngineProblem, *, deadline: float, seed: int, soft_mandatory: bool = False
) -> EngineRoutes | None:
    """Search until `deadline` (time.monotonic()); None unless PyVRP's best is feasible."""
    data, members = to_problem_data(ep, soft_mandatory=soft_mandatory)
    result = pyvrp_solve(
        data, stop=_Deadline(deadline), seed=seed, collect_stats=False, display=False
    )
    best = result.best
    if not best.is_feasible():
        logger.info("PyVRP found no feasible solution")
        return None
    taken: dict[int, int] = defaultdict(int)
    routes: EngineRoutes = []
    for route in best.routes():
        vtype = route.vehicle_type()
        vehicle = members[vtype][taken[vtype]]
        taken[vtype] += 1
        visits = [activity.idx for activity in route if activity.is_client()]
        if visits:
            routes.append((vehicle, visits))
    return routes
