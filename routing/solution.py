"""Output of the solver: a plan of routes, its schedule, unserved stops and feasibility."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Visit:
    """One delivery on a route (times in seconds, or ticks for benchmark instances)."""

    stop_id: str
    arrival_s: int
    start_s: int
    departure_s: int


@dataclass(frozen=True)
class Route:
    """One vehicle's route, in visiting order.

    Attributes:
        vehicle_id: the van.
        visits: the deliveries in order.
        start_s: when it leaves its start place.
        end_s: when it arrives at its end place.
        distance_m: total distance driven.
        break_start_s: when the driver's break starts, if the vehicle has one.
        parcels: parcels carried.
        volume_ml: volume carried.
    """

    vehicle_id: str
    visits: tuple[Visit, ...]
    start_s: int
    end_s: int
    distance_m: int
    break_start_s: int | None = None
    parcels: int = 0
    volume_ml: int = 0

    @property
    def stop_ids(self) -> tuple[str, ...]:
        """The stop ids in visiting order."""
        return tuple(v.stop_id for v in self.visits)

    @property
    def duration_s(self) -> int:
        """Time from leaving the start place to arriving at the end place."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Unserved:
    """A stop left out of the plan, and why."""

    stop_id: str
    reason: str


@dataclass(frozen=True)
class RoutePlan:
    """A complete plan, checked by `routing.check` before it is returned.

    Attributes:
        routes: non-empty routes only.
        unserved: stops not in any route (done stops of started routes are not listed).
        distance_m: total distance.
        duration_s: total route duration.
        cost: running cost plus drop penalties, in minor currency units (for benchmark
            instances with unit costs this is the distance).
        violations: constraint violations found by the independent checker; empty when
            feasible.
        engine: which search produced the routes ("ortools", "pyvrp", ...).
        scale: matrix units per reported unit (10 for DIMACS benchmark ticks).
    """

    routes: tuple[Route, ...]
    unserved: tuple[Unserved, ...]
    distance_m: int
    duration_s: int
    cost: float
    violations: tuple[str, ...] = ()
    engine: str = ""
    scale: int = 1

    def is_feasible(self) -> bool:
        """True when the independent checker found no violated constraint."""
        return not self.violations

    def unserved_ids(self) -> tuple[str, ...]:
        """Ids of stops not served."""
        return tuple(u.stop_id for u in self.unserved)

    def route_of(self, vehicle_id: str) -> Route | None:
        """The route driven by a vehicle, if it has one."""
        for route in self.routes:
            if route.vehicle_id == vehicle_id:
                return route
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of the plan."""
        return {
            "routes": [
                {
                    "vehicle_id": r.vehicle_id,
                    "start_s": r.start_s,
                    "end_s": r.end_s,
                    "distance_m": r.distance_m,
                    "break_start_s": r.break_start_s,
                    "visits": [
                        {
                            "stop_id": v.stop_id,
                            "arrival_s": v.arrival_s,
                            "start_s": v.start_s,
                            "departure_s": v.departure_s,
                        }
                        for v in r.visits
                    ],
                }
                for r in self.routes
            ],
            "unserved": [{"stop_id": u.stop_id, "reason": u.reason} for u in self.unserved],
            "distance_m": self.distance_m,
            "duration_s": self.duration_s,
            "cost": self.cost,
            "feasible": self.is_feasible(),
            "violations": list(self.violations),
            "engine": self.engine,
        }
