"""The integer model both engine adapters read: indices instead of ids, one objective scale.

Objective units: a vehicle's cost per km (minor units per 1,000 m) and cost per hour (per
3,600 s) become integer coefficients per metre and per second by multiplying both by 3,600,000
and dividing everything (penalties included) by the greatest common divisor, so the
objective stays an exact integer. For benchmark vehicles (1 per km, 0 per hour) the
coefficient per metre is 1: the objective is the distance itself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from routing.matrix import IntMatrix, TravelMatrix
from routing.problem import Place, RoutingProblem


@dataclass(frozen=True)
class EngineVehicle:
    """A vehicle in matrix indices and objective units."""

    id: str
    start: int
    end: int
    earliest_s: int
    latest_s: int
    capacity: tuple[int, int]
    fridge: bool
    distance_coef: int
    duration_coef: int
    rest: tuple[int, int, int] | None  # (earliest start, latest start, duration)


@dataclass(frozen=True)
class EngineStop:
    """A stop to plan, in matrix indices and objective units."""

    id: str
    place: int
    service_s: int
    windows: tuple[tuple[int, int], ...]
    demand: tuple[int, int]
    fridge: bool
    allowed: tuple[int, ...] | None  # vehicle indices, None = any
    penalty: int | None  # None = mandatory


@dataclass(frozen=True)
class EngineProblem:
    """Everything an engine needs; built once per solve by `build_engine_problem`."""

    places: tuple[Place, ...]
    distance: IntMatrix
    duration: IntMatrix
    vehicles: tuple[EngineVehicle, ...]
    stops: tuple[EngineStop, ...]
    horizon_s: int
    uses_volume: bool
    skipped: tuple[str, ...]  # stops no vehicle can ever take; left unserved

    def pyvrp_blockers(self) -> list[str]:
        """Features PyVRP cannot express here; empty when PyVRP may run."""
        blockers = []
        if any(v.rest for v in self.vehicles):
            blockers.append("driver breaks")
        if any(len(s.windows) > 1 for s in self.stops):
            blockers.append("several time windows per stop")
        fridge_ok = tuple(i for i, v in enumerate(self.vehicles) if v.fridge)
        for stop in self.stops:
            expected = fridge_ok if stop.fridge else None
            if stop.allowed is not None and stop.allowed != expected:
                blockers.append("pinned stops or started routes")
                break
        fridge_places = {s.place for s in self.stops if s.fridge}
        if any(s.place in fridge_places for s in self.stops if not s.fridge):
            blockers.append("fridge and non-fridge stops at one place")
        return blockers


def relax_for_pyvrp(ep: EngineProblem) -> EngineProblem:
    """A plain version of `ep` that PyVRP can express, to seed OR-Tools (the hybrid engine).

    Breaks are dropped but their duration is taken off the shift end; each stop keeps only its
    first window; pins and started-route loads are ignored (fridge rules stay). OR-Tools then
    repairs and improves the result under the real constraints.
    """
    fridge_ok = tuple(i for i, v in enumerate(ep.vehicles) if v.fridge)
    vehicles = tuple(
        dataclasses.replace(
            v, rest=None, latest_s=max(v.earliest_s, v.latest_s - (v.rest[2] if v.rest else 0))
        )
        for v in ep.vehicles
    )
    stops = tuple(
        dataclasses.replace(
            s, windows=s.windows[:1], allowed=fridge_ok if s.fridge and s.allowed else None
        )
        for s in ep.stops
    )
    return dataclasses.replace(ep, vehicles=vehicles, stops=stops)


def build_engine_problem(
    problem: RoutingProblem, places: list[Place], matrix: TravelMatrix
) -> EngineProblem:
    """Translate `problem` into indices and integer objective coefficients."""
    index = {place: i for i, place in enumerate(places)}
    km_scale, hour_scale = 3600, 1000  # per metre and per second, times 3,600,000
    coefs = [v.cost_per_km * km_scale for v in problem.vehicles]
    coefs += [v.cost_per_hour * hour_scale for v in problem.vehicles]
    done = problem.done_stop_ids()
    planned = [s for s in problem.stops if s.id not in done]
    penalties = [
        s.drop_penalty * (1 + s.priority) * 3_600_000
        for s in planned
        if s.drop_penalty is not None
    ]
    divisor = math.gcd(*(c for c in coefs + penalties if c)) or 1
    big_volume = sum(s.volume_ml for s in planned) + 1
    vehicles = []
    for vehicle in problem.vehicles:
        start_place, earliest = problem.start_of(vehicle)
        rest = vehicle.rest_break
        vehicles.append(
            EngineVehicle(
                id=vehicle.id,
                start=index[start_place],
                end=index[problem.end_of(vehicle)],
                earliest_s=earliest,
                latest_s=vehicle.shift.end_s,
                capacity=(
                    vehicle.capacity_parcels,
                    vehicle.capacity_volume_ml
                    if vehicle.capacity_volume_ml is not None
                    else big_volume,
                ),
                fridge=vehicle.fridge,
                distance_coef=vehicle.cost_per_km * km_scale // divisor,
                duration_coef=vehicle.cost_per_hour * hour_scale // divisor,
                rest=(rest.window.start_s, rest.window.end_s, rest.duration_s) if rest else None,
            )
        )
    stops = []
    skipped = []
    for stop in planned:
        allowed = tuple(i for i, v in enumerate(problem.vehicles) if problem.can_carry(v, stop))
        fits = [
            i
            for i in allowed
            if stop.parcels <= vehicles[i].capacity[0]
            and stop.volume_ml <= vehicles[i].capacity[1]
        ]
        if not fits:
            skipped.append(stop.id)
            continue
        stops.append(
            EngineStop(
                id=stop.id,
                place=index[stop.location],
                service_s=problem.service_s(stop),
                windows=tuple((w.start_s, w.end_s) for w in stop.windows),
                demand=(stop.parcels, stop.volume_ml),
                fridge=stop.needs_fridge,
                allowed=None if len(allowed) == len(problem.vehicles) else allowed,
                penalty=None
                if stop.drop_penalty is None
                else stop.drop_penalty * (1 + stop.priority) * 3_600_000 // divisor,
            )
        )
    horizon = max(v.latest_s for v in vehicles)
    return EngineProblem(
        places=tuple(places),
        distance=np.ascontiguousarray(matrix.distance_m, dtype=np.int64),
        duration=np.ascontiguousarray(matrix.duration_s, dtype=np.int64),
        vehicles=tuple(vehicles),
        stops=tuple(stops),
        horizon_s=horizon,
        uses_volume=any(s.demand[1] for s in stops),
        skipped=tuple(skipped),
    )


EngineRoutes = list[tuple[int, list[int]]]
"""Engine output: (vehicle index, stop indices in visiting order) per non-empty route."""
