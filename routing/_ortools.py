"""OR-Tools adapter: the only module that imports `ortools`.

Uses the routing library of the pinned 9.15 wheel (`ortools.constraint_solver.pywrapcp`,
CamelCase methods). Nodes are the stops (0..S-1) followed by one node per distinct start/end
place. Every stop gets a disjunction - mandatory ones with a penalty larger than any
insertion - so the search always returns a plan and reports what it could not fit.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ortools.constraint_solver import (  # type: ignore[import-untyped]
    pywrapcp,
    routing_enums_pb2,
)

from routing._model import EngineProblem, EngineRoutes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrToolsConfig:
    """Search settings (chosen by measurement; see docs/routing.md)."""

    first_solution: str = "PARALLEL_CHEAPEST_INSERTION"
    metaheuristic: str = "GUIDED_LOCAL_SEARCH"
    guided_lambda: float = 0.1


def solve_ortools(
    ep: EngineProblem,
    *,
    deadline: float,
    config: OrToolsConfig = OrToolsConfig(),  # noqa: B008 - frozen, safe to share
    initial: EngineRoutes | None = None,
) -> EngineRoutes | None:
    """Search until `deadline` (time.monotonic()); None if no solution was found."""
    num_stops = len(ep.stops)
    end_places = sorted({p for v in ep.vehicles for p in (v.start, v.end)})
    place_node = {place: num_stops + k for k, place in enumerate(end_places)}
    node_place = np.array([s.place for s in ep.stops] + end_places, dtype=np.int64)
    starts = [place_node[v.start] for v in ep.vehicles]
    ends = [place_node[v.end] for v in ep.vehicles]
    manager = pywrapcp.RoutingIndexManager(len(node_place), len(ep.vehicles), starts, ends)
    routing = pywrapcp.RoutingModel(manager)

    distance = ep.distance[np.ix_(node_place, node_place)]
    travel = ep.duration[np.ix_(node_place, node_place)]
    service = np.array([s.service_s for s in ep.stops] + [0] * len(end_places), dtype=np.int64)

    # Arc costs: one registered matrix per distinct cost-per-metre coefficient.
    by_coef: dict[int, int] = {}
    for v, vehicle in enumerate(ep.vehicles):
        coef = vehicle.distance_coef
        if coef not in by_coef:
            by_coef[coef] = routing.RegisterTransitMatrix((distance * coef).tolist())
        routing.SetArcCostEvaluatorOfVehicle(by_coef[coef], v)

    time_cb = routing.RegisterTransitMatrix((travel + service[:, None]).tolist())
    horizon = ep.horizon_s
    routing.AddDimension(time_cb, horizon, horizon, False, "time")
    time_dim = routing.GetDimensionOrDie("time")
    for v, vehicle in enumerate(ep.vehicles):
        time_dim.CumulVar(routing.Start(v)).SetRange(vehicle.earliest_s, vehicle.latest_s)
        time_dim.CumulVar(routing.End(v)).SetRange(vehicle.earliest_s, vehicle.latest_s)
        if vehicle.duration_coef:
            time_dim.SetSpanCostCoefficientForVehicle(vehicle.duration_coef, v)
    for node, stop in enumerate(ep.stops):
        if not stop.windows:
            continue
        cumul = time_dim.CumulVar(manager.NodeToIndex(node))
        cumul.SetRange(stop.windows[0][0], stop.windows[-1][1])
        for (_, end), (start, _) in zip(stop.windows, stop.windows[1:], strict=False):
            cumul.RemoveInterval(end + 1, start - 1)

    demand_dims = [0, 1] if ep.uses_volume else [0]
    for dim in demand_dims:
        demand = [s.demand[dim] for s in ep.stops] + [0] * len(end_places)
        cb = routing.RegisterUnaryTransitVector(demand)
        caps = [v.capacity[dim] for v in ep.vehicles]
        routing.AddDimensionWithVehicleCapacity(cb, 0, caps, True, f"load{dim}")

    if any(v.rest for v in ep.vehicles):
        # Breaks may not overlap a service; the visit transit of a node is its service time.
        visit_transit = [0] * routing.Size()
        for index in range(routing.Size()):
            visit_transit[index] = int(service[manager.IndexToNode(index)])
        solver = routing.solver()
        for v, vehicle in enumerate(ep.vehicles):
            if vehicle.rest is None:
                continue
            earliest, latest, duration = vehicle.rest
            interval = solver.FixedDurationIntervalVar(
                earliest, latest, duration, False, f"break {vehicle.id}"
            )
            time_dim.SetBreakIntervalsOfVehicle([interval], v, visit_transit)

    # A dropped mandatory stop must cost more than any single insertion could save.
    max_coef = max(v.distance_coef for v in ep.vehicles)
    max_time_coef = max(v.duration_coef for v in ep.vehicles)
    mandatory_penalty = 10 * (
        2 * int(distance.max(initial=0)) * max_coef + horizon * max_time_coef + 1
    )
    for node, stop in enumerate(ep.stops):
        index = manager.NodeToIndex(node)
        penalty = mandatory_penalty if stop.penalty is None else stop.penalty
        routing.AddDisjunction([index], penalty)
        if stop.allowed is not None:
            # SetAllowedVehiclesForIndex's SWIG wrapper rejects every Python sequence in the
            # 9.15 wheel; restricting the vehicle variable is equivalent (-1 = unperformed).
            routing.VehicleVar(index).SetValues([-1, *stop.allowed])

    for v in range(len(ep.vehicles)):
        routing.AddVariableMinimizedByFinalizer(time_dim.CumulVar(routing.End(v)))
        routing.AddVariableMaximizedByFinalizer(time_dim.CumulVar(routing.Start(v)))

    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = getattr(
        routing_enums_pb2.FirstSolutionStrategy, config.first_solution
    )
    params.local_search_metaheuristic = getattr(
        routing_enums_pb2.LocalSearchMetaheuristic, config.metaheuristic
    )
    params.guided_local_search_lambda_coefficient = config.guided_lambda
    remaining = max(0.05, deadline - time.monotonic())
    params.time_limit.FromMilliseconds(int(remaining * 1000))

    solution = None
    if initial:
        # Leave out stops the vehicle may not take (OR-Tools would log an error per stop).
        allowed_initial = [
            (v, [s for s in stops if v in (ep.stops[s].allowed or (v,))]) for v, stops in initial
        ]
        routing.CloseModelWithParameters(params)
        start_assignment = _read_routes(
            routing, manager, len(ep.vehicles), allowed_initial, deadline
        )
        if start_assignment is not None:
            params.time_limit.FromMilliseconds(int(max(0.05, deadline - time.monotonic()) * 1000))
            solution = routing.SolveFromAssignmentWithParameters(start_assignment, params)
            if solution is None:
                logger.info(
                    "OR-Tools found nothing from the warm start (status %s)", routing.status()
                )
        else:
            logger.info("warm start rejected by OR-Tools; solving from scratch")
    if solution is None:
        solution = routing.SolveWithParameters(params)
    if solution is None:
        logger.info("OR-Tools found no solution (status %s)", routing.status())
        return None
    result: EngineRoutes = []
    for v in range(len(ep.vehicles)):
        index = routing.Start(v)
        visits: list[int] = []
        index = solution.Value(routing.NextVar(index))
        while not routing.IsEnd(index):
            visits.append(manager.IndexToNode(index))
            index = solution.Value(routing.NextVar(index))
        if visits:
            result.append((v, visits))
    return result


def _read_routes(
    routing: Any, manager: Any, num_vehicles: int, initial: EngineRoutes, deadline: float
) -> Any:
    """An assignment from `initial`, repaired greedily if OR-Tools rejects it as a whole.

    The repair re-adds stops one at a time in their original order and keeps each one only if
    the routes so far stay feasible; stops left out are unperformed and the search re-inserts
    them. It stops repairing at half the remaining time.
    """
    routes: list[list[int]] = [[] for _ in range(num_vehicles)]
    for v, stops in initial:
        routes[v] = [manager.NodeToIndex(s) for s in stops]
    assignment = routing.ReadAssignmentFromRoutes(routes, True)
    if assignment is not None:
        return assignment
    repair_until = time.monotonic() + 0.5 * max(0.0, deadline - time.monotonic())
    kept: list[list[int]] = [[] for _ in range(num_vehicles)]
    dropped = 0
    for v, route in enumerate(routes):
        for index in route:
            if time.monotonic() > repair_until:
                break
            kept[v].append(index)
            if routing.ReadAssignmentFromRoutes(kept, True) is None:
                kept[v].pop()
                dropped += 1
    logger.info("warm start repaired: %d stops left for the search to re-insert", dropped)
    return routing.ReadAssignmentFromRoutes(kept, True)
