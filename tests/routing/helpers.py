"""Helpers for routing tests: tiny planar problems with hand-checkable optima."""

from __future__ import annotations

from pathlib import Path

from routing import Depot, Point, RoutingProblem, Stop, TimeWindow, Vehicle
from routing.matrix import PlanarMatrix

DATA = Path(__file__).resolve().parents[1] / "data" / "routing"
REPO = Path(__file__).resolve().parents[2]

#: Planar test problems use CVRPLIB rounding: distances are whole instance units.
NINT = PlanarMatrix("cvrplib_nint")


def van(vehicle_id: str, **kwargs: object) -> Vehicle:
    """A vehicle at depot "d" with a long shift and room for 10 parcels."""
    defaults: dict[str, object] = {
        "depot_id": "d",
        "shift": TimeWindow(0, 1000),
        "capacity_parcels": 10,
    }
    defaults.update(kwargs)
    return Vehicle(id=vehicle_id, **defaults)  # type: ignore[arg-type]


def line_problem(**overrides: object) -> RoutingProblem:
    """Depot at 0; stops at x = 10, 20 (east) and x = -10, -20 (west).

    One van of capacity 10: optimal tour 0 -> 20 -> 0 -> ... = 80 (out and back both ways).
    """
    stops = tuple(Stop(id=f"s{x}", location=Point(float(x), 0.0)) for x in (10, 20, -10, -20))
    fields: dict[str, object] = {
        "depots": (Depot("d", Point(0.0, 0.0)),),
        "vehicles": (van("v1"),),
        "stops": stops,
    }
    fields.update(overrides)
    return RoutingProblem(**fields)  # type: ignore[arg-type]
