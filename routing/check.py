"""Independent feasibility checker and plan builder.

This module recomputes everything from the `RoutingProblem` and the travel matrix; it shares
no code with the solver adapters, so a modelling slip in an engine shows up here as a
violation instead of reaching a courier.

Schedule rules: a vehicle leaves its start place at its (started) shift start or later; it
may wait at a stop until a window opens; service must *start* inside one of the stop's
windows; it must arrive at its end place by the shift end. A break starts inside its window,
either on a leg (the driver pulls over, so the leg takes `travel + break`) or at the end
place after the last arrival; it never interrupts a service.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from routing.matrix import MatrixProvider, TravelMatrix, build_matrix
from routing.problem import Place, RoutingProblem, Stop, Vehicle
from routing.solution import Route, RoutePlan, Unserved, Visit

logger = logging.getLogger(__name__)

RouteSpec = tuple[str, Sequence[str]]
"""A route as engines return it: vehicle id and stop ids in visiting order."""


@dataclass(frozen=True)
class _Schedule:
    visits: tuple[Visit, ...]
    start_s: int
    end_s: int
    break_start_s: int | None
    problems: tuple[str, ...]


def _service_start(stop: Stop, arrival_s: int) -> int | None:
    """Earliest service start at or after arrival inside a window (None if too late)."""
    if not stop.windows:
        return arrival_s
    for window in stop.windows:
        if arrival_s <= window.end_s:
            return max(arrival_s, window.start_s)
    return None


def _simulate(
    problem: RoutingProblem,
    matrix: TravelMatrix,
    index: dict[Place, int],
    vehicle: Vehicle,
    stops: Sequence[Stop],
    break_gap: int | None,
) -> _Schedule:
    """Earliest schedule of a sequence; `break_gap` k = break on the leg into stop k
    (k = len(stops) is the leg to the end place, len(stops) + 1 is after arriving there)."""
    start_place, time_s = problem.start_of(vehicle)
    travel = matrix.duration_s
    where = index[start_place]
    problems: list[str] = []
    visits: list[Visit] = []
    break_start: int | None = None
    rest = vehicle.rest_break
    first_wait = 0

    def leg(to: int, gap: int, depart_s: int) -> int:
        nonlocal break_start
        arrive = depart_s + int(travel[where, to])
        if rest is not None and gap == break_gap:
            break_start = max(depart_s, rest.window.start_s)
            if break_start > rest.window.end_s:
                problems.append(f"vehicle {vehicle.id}: break starts too late ({break_start})")
            arrive = max(arrive, break_start) + rest.duration_s
        return arrive

    for k, stop in enumerate(stops):
        to = index[stop.location]
        arrival = leg(to, k, time_s)
        start = _service_start(stop, arrival)
        if start is None:
            problems.append(f"stop {stop.id}: arrival {arrival} after its last window closes")
            start = arrival
        if k == 0 and break_gap != 0:
            first_wait = start - arrival
        departure = start + problem.service_s(stop)
        visits.append(Visit(stop.id, arrival, start, departure))
        where, time_s = to, departure
    end = leg(index[problem.end_of(vehicle)], len(stops), time_s)
    if rest is not None and break_gap == len(stops) + 1:
        break_start = max(end, rest.window.start_s)
        if break_start > rest.window.end_s:
            problems.append(f"vehicle {vehicle.id}: break starts too late ({break_start})")
        end = break_start + rest.duration_s
    if rest is not None and break_start is None:
        problems.append(f"vehicle {vehicle.id}: no break")
    if end > vehicle.shift.end_s:
        problems.append(
            f"vehicle {vehicle.id}: back at {end}, after shift end {vehicle.shift.end_s}"
        )
    # Leaving later by the wait at the first stop changes no service time but saves duration.
    _, earliest = problem.start_of(vehicle)
    return _Schedule(tuple(visits), earliest + first_wait, end, break_start, tuple(problems))


def _schedule(
    problem: RoutingProblem,
    matrix: TravelMatrix,
    index: dict[Place, int],
    vehicle: Vehicle,
    stops: Sequence[Stop],
) -> _Schedule:
    if vehicle.rest_break is None:
        return _simulate(problem, matrix, index, vehicle, stops, None)
    best: _Schedule | None = None
    for gap in range(len(stops) + 2):
        candidate = _simulate(problem, matrix, index, vehicle, stops, gap)
        if best is None or (len(candidate.problems), candidate.end_s) < (
            len(best.problems),
            best.end_s,
        ):
            best = candidate
    assert best is not None
    return best


def _unserved_reason(
    problem: RoutingProblem, matrix: TravelMatrix, index: dict[Place, int], stop: Stop
) -> str:
    compatible = [v for v in problem.vehicles if problem.can_carry(v, stop)]
    if not compatible:
        if stop.needs_fridge and not any(v.fridge for v in problem.vehicles):
            return "needs a fridge van and there is none"
        required = problem.required_vehicle(stop)
        if required is not None:
            return f"must go with vehicle {required}, which cannot carry it"
        return "no vehicle can carry it (fridge or loading constraints)"
    fits = [
        v
        for v in compatible
        if stop.parcels <= v.capacity_parcels
        and (v.capacity_volume_ml is None or stop.volume_ml <= v.capacity_volume_ml)
    ]
    if not fits:
        return "larger than the capacity of every vehicle that may carry it"
    # Vehicles with the same start, end, shift and break reach a stop equally: try one each.
    by_shape = {(problem.start_of(v), problem.end_of(v), v.shift, v.rest_break): v for v in fits}
    reachable = [
        v for v in by_shape.values() if not _schedule(problem, matrix, index, v, [stop]).problems
    ]
    if not reachable:
        return "no vehicle can reach it within its time window and be back by the shift end"
    if not stop.mandatory:
        return "dropped: serving it would cost more than its drop penalty"
    return "no room left: capacity or shift time exhausted on the vehicles that can reach it"


def evaluate(
    problem: RoutingProblem,
    matrix: TravelMatrix,
    routes: Sequence[RouteSpec],
    *,
    places: Sequence[Place] | None = None,
    engine: str = "",
) -> RoutePlan:
    """Schedule `routes`, find every violated constraint and build the `RoutePlan`.

    Args:
        problem: the problem the routes claim to solve.
        matrix: travel matrix over `places` (by default `routing.matrix.places_of(problem)`).
        routes: (vehicle id, stop ids) pairs; empty routes are ignored.
        places: the places the matrix rows refer to.
        engine: recorded in the plan.

    Returns:
        The plan, with `violations` listing everything that is wrong (empty if feasible).
    """
    if places is None:
        from routing.matrix import places_of

        places = places_of(problem)
    index = {place: i for i, place in enumerate(places)}
    violations: list[str] = []
    served: set[str] = set()
    done = problem.done_stop_ids()
    used: set[str] = set()
    built: list[Route] = []
    total_cost = 0.0
    for vehicle_id, stop_ids in routes:
        if not stop_ids:
            continue
        try:
            vehicle = problem.vehicle(vehicle_id)
        except KeyError:
            violations.append(f"unknown vehicle {vehicle_id!r}")
            continue
        if vehicle_id in used:
            violations.append(f"vehicle {vehicle_id} has two routes")
        used.add(vehicle_id)
        stops: list[Stop] = []
        for stop_id in stop_ids:
            try:
                stop = problem.stop(stop_id)
            except KeyError:
                violations.append(f"unknown stop {stop_id!r}")
                continue
            if stop_id in served:
                violations.append(f"stop {stop_id} visited twice")
            if stop_id in done:
                violations.append(f"stop {stop_id} was already delivered")
            if not problem.can_carry(vehicle, stop):
                violations.append(f"stop {stop_id} cannot go with vehicle {vehicle_id}")
            served.add(stop_id)
            stops.append(stop)
        parcels = sum(s.parcels for s in stops)
        volume = sum(s.volume_ml for s in stops)
        if parcels > vehicle.capacity_parcels:
            violations.append(
                f"vehicle {vehicle_id}: {parcels} parcels > capacity {vehicle.capacity_parcels}"
            )
        if vehicle.capacity_volume_ml is not None and volume > vehicle.capacity_volume_ml:
            violations.append(
                f"vehicle {vehicle_id}: volume {volume} > capacity {vehicle.capacity_volume_ml}"
            )
        schedule = _schedule(problem, matrix, index, vehicle, stops)
        violations.extend(schedule.problems)
        start_place, _ = problem.start_of(vehicle)
        path = [index[start_place]] + [index[s.location] for s in stops]
        path.append(index[problem.end_of(vehicle)])
        distance = sum(int(matrix.distance_m[a, b]) for a, b in zip(path, path[1:], strict=False))
        route = Route(
            vehicle_id=vehicle_id,
            visits=schedule.visits,
            start_s=schedule.start_s,
            end_s=schedule.end_s,
            distance_m=distance,
            break_start_s=schedule.break_start_s,
            parcels=parcels,
            volume_ml=volume,
        )
        built.append(route)
        total_cost += (
            vehicle.cost_per_km * distance / 1000.0
            + vehicle.cost_per_hour * route.duration_s / 3600.0
        )
    unserved: list[Unserved] = []
    for stop in problem.stops:
        if stop.id in served or stop.id in done:
            continue
        reason = _unserved_reason(problem, matrix, index, stop)
        unserved.append(Unserved(stop.id, reason))
        if stop.mandatory:
            violations.append(f"mandatory stop {stop.id} not served: {reason}")
        else:
            assert stop.drop_penalty is not None
            total_cost += stop.drop_penalty * (1 + stop.priority)
    return RoutePlan(
        routes=tuple(built),
        unserved=tuple(unserved),
        distance_m=sum(r.distance_m for r in built),
        duration_s=sum(r.duration_s for r in built),
        cost=total_cost,
        violations=tuple(violations),
        engine=engine,
        scale=matrix.scale,
    )


def check_feasibility(
    problem: RoutingProblem,
    plan: RoutePlan,
    *,
    matrix: TravelMatrix | None = None,
    provider: MatrixProvider | None = None,
) -> list[str]:
    """Every violated constraint of `plan` (empty list = feasible).

    The routes are re-scheduled from scratch; reported distances and visit times that do not
    match the recomputation are violations too.

    Args:
        problem: the problem.
        plan: the plan to check.
        matrix: the travel matrix used to solve (over `places_of(problem)`); built with
            `provider` (or the default provider) when omitted.
        provider: matrix provider used when `matrix` is None.
    """
    if matrix is None:
        _, matrix = build_matrix(problem, provider)
    fresh = evaluate(problem, matrix, [(r.vehicle_id, r.stop_ids) for r in plan.routes])
    problems = list(fresh.violations)
    mine = {r.vehicle_id: r for r in fresh.routes}
    for route in plan.routes:
        again = mine.get(route.vehicle_id)
        if again is None:
            continue
        if again.distance_m != route.distance_m:
            problems.append(
                f"vehicle {route.vehicle_id}: reported distance {route.distance_m}"
                f" but it is {again.distance_m}"
            )
        for claimed, actual in zip(route.visits, again.visits, strict=False):
            if claimed.start_s < actual.start_s:
                problems.append(
                    f"stop {claimed.stop_id}: service cannot start at {claimed.start_s}"
                )
    if {u.stop_id for u in plan.unserved} != {u.stop_id for u in fresh.unserved}:
        problems.append("the list of unserved stops does not match the routes")
    return problems
