"""Reading problems from files: Solomon VRPTW, VRPLIB (CVRP / VRPTW) and our JSON format.

The format is detected from the content. Benchmark files become `RoutingProblem`s over planar
`Point`s with every time multiplied by the `PlanarMatrix` scale, so a tick of the matrix is a
tick of the clock; see `routing.matrix`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from routing.matrix import MatrixProvider, PlanarMatrix
from routing.problem import (
    Break,
    Depot,
    Location,
    Place,
    Point,
    ProblemError,
    RoutingProblem,
    StartedRoute,
    Stop,
    TimeWindow,
    Vehicle,
)

JSON_FORMAT = "dispensary-routing/1"


class InstanceError(ValueError):
    """The file cannot be read as any supported format; the message is one line."""


@dataclass(frozen=True)
class Instance:
    """A problem read from a file, with the matrix provider its convention needs.

    Attributes:
        name: instance name.
        kind: "solomon", "vrplib" or "json".
        problem: the routing problem.
        provider: the matrix provider (None: the default provider).
        numeric_ids: stop ids are customer numbers (printed as integers).
    """

    name: str
    kind: str
    problem: RoutingProblem
    provider: MatrixProvider | None
    numeric_ids: bool


def detect_format(text: str) -> str:
    """'json', 'vrplib' or 'solomon'; raises InstanceError otherwise."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return "json"
    if re.search(r"^\s*(NAME|TYPE|DIMENSION)\s*:", text, re.MULTILINE):
        return "vrplib"
    if re.search(r"CUST\s+NO\.", text) and re.search(r"VEHICLE", text):
        return "solomon"
    raise InstanceError("unrecognised instance format (expected Solomon, VRPLIB or JSON)")


def load_instance(path: str | Path) -> Instance:
    """Read an instance file of any supported format."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InstanceError(f"cannot read {file}: {err}") from err
    return parse_instance(text, default_name=file.stem)


def parse_instance(text: str, *, default_name: str = "instance") -> Instance:
    """Parse instance text of any supported format."""
    kind = detect_format(text)
    try:
        if kind == "json":
            return _from_json_text(text, default_name)
        if kind == "vrplib":
            return _parse_vrplib(text, default_name)
        return _parse_solomon(text, default_name)
    except InstanceError:
        raise
    except (ProblemError, ValueError, KeyError, IndexError, TypeError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InstanceError(f"invalid {kind} instance: {message}") from err


def _benchmark_problem(
    name: str,
    coords: Sequence[tuple[float, float]],
    demands: Sequence[int],
    windows: Sequence[tuple[float, float]] | None,
    services: Sequence[float] | None,
    ids: Sequence[str],
    depot: int,
    fleet: int,
    capacity: int,
    provider: PlanarMatrix,
) -> RoutingProblem:
    """A benchmark problem: one depot, identical vehicles, mandatory stops, cost = distance."""
    tick = provider.to_ticks
    if windows is not None:
        shift = TimeWindow(tick(windows[depot][0]), tick(windows[depot][1]))
    else:
        # No time limits: a horizon no route can exceed (travel time = distance).
        xs = [c[0] for c in coords]
        ys = [c[1] for c in coords]
        span = math.hypot(max(xs) - min(xs), max(ys) - min(ys)) + 1
        shift = TimeWindow(0, tick(2 * span * len(coords)))
    stops = []
    for i, (x, y) in enumerate(coords):
        if i == depot:
            continue
        stops.append(
            Stop(
                id=ids[i],
                location=Point(x, y),
                windows=(TimeWindow(tick(windows[i][0]), tick(windows[i][1])),)
                if windows is not None
                else (),
                service_s=tick(services[i]) if services is not None else 0,
                parcels=demands[i],
            )
        )
    depot_point = Point(*coords[depot])
    vehicles = tuple(
        Vehicle(id=f"v{k + 1}", depot_id="depot", shift=shift, capacity_parcels=capacity)
        for k in range(fleet)
    )
    return RoutingProblem(
        depots=(Depot("depot", depot_point),), vehicles=vehicles, stops=tuple(stops), name=name
    )


def _parse_solomon(text: str, default_name: str) -> Instance:
    lines = [line.strip() for line in text.splitlines()]
    name = next((line for line in lines if line), default_name)
    try:
        at = next(i for i, line in enumerate(lines) if line.upper().startswith("NUMBER"))
        fleet, capacity = (int(float(v)) for v in lines[at + 1].split()[:2])
        header = next(i for i, line in enumerate(lines) if re.match(r"CUST\s+NO\.", line))
    except (StopIteration, ValueError) as err:
        raise InstanceError("Solomon file lacks the VEHICLE or CUSTOMER section") from err
    rows = [line.split() for line in lines[header + 1 :] if line]
    if not rows or any(len(r) < 7 for r in rows):
        raise InstanceError("Solomon customer rows need 7 columns")
    values = [[float(v) for v in r[:7]] for r in rows]
    ids = [str(int(v[0])) for v in values]
    if len(set(ids)) != len(ids):
        raise InstanceError("duplicate customer numbers")
    provider = PlanarMatrix("dimacs_trunc1")
    problem = _benchmark_problem(
        name,
        coords=[(v[1], v[2]) for v in values],
        demands=[int(v[3]) for v in values],
        windows=[(v[4], v[5]) for v in values],
        services=[v[6] for v in values],
        ids=ids,
        depot=0,
        fleet=fleet,
        capacity=capacity,
        provider=provider,
    )
    return Instance(name, "solomon", problem, provider, numeric_ids=True)


def _parse_vrplib(text: str, default_name: str) -> Instance:
    header: dict[str, str] = {}
    sections: dict[str, list[list[str]]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line == "EOF":
            continue
        match = re.match(r"^([A-Z_]+)\s*:\s*(.*)$", line)
        if match and not line.endswith("SECTION"):
            header[match.group(1)] = match.group(2).strip().strip('"')
            current = None
        elif re.match(r"^[A-Z_]+_SECTION\s*:?$", line):
            current = line.rstrip(":").strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line.split())
    name = header.get("NAME", default_name)
    weight_type = header.get("EDGE_WEIGHT_TYPE", "EUC_2D")
    if weight_type != "EUC_2D":
        raise InstanceError(f"unsupported EDGE_WEIGHT_TYPE {weight_type} (only EUC_2D)")
    coords_rows = sections.get("NODE_COORD_SECTION")
    if not coords_rows:
        raise InstanceError("VRPLIB file has no NODE_COORD_SECTION")
    ids = [row[0] for row in coords_rows]
    position = {node: i for i, node in enumerate(ids)}
    coords = [(float(r[1]), float(r[2])) for r in coords_rows]
    demands = [0] * len(ids)
    for row in sections.get("DEMAND_SECTION", []):
        demands[position[row[0]]] = int(row[1])
    depots = [r[0] for r in sections.get("DEPOT_SECTION", []) if r[0] != "-1"]
    depot = position[depots[0]] if depots else 0
    capacity = int(header["CAPACITY"])
    windows: list[tuple[float, float]] | None = None
    services: list[float] | None = None
    if "TIME_WINDOW_SECTION" in sections:
        windows = [(0.0, 0.0)] * len(ids)
        for row in sections["TIME_WINDOW_SECTION"]:
            windows[position[row[0]]] = (float(row[1]), float(row[2]))
        services = [0.0] * len(ids)
        for row in sections.get("SERVICE_TIME_SECTION", []):
            services[position[row[0]]] = float(row[1])
    provider = PlanarMatrix("dimacs_trunc1" if windows is not None else "cvrplib_nint")
    customers = len(ids) - 1
    if "VEHICLES" in header:
        fleet = int(header["VEHICLES"])
    else:
        # "Unlimited" fleet: enough vans for any sensible plan without bloating the model.
        lower = max(1, math.ceil(sum(demands) / max(1, capacity)))
        match = re.search(r"-k(\d+)", name)
        lower = max(lower, int(match.group(1)) if match else 0)
        fleet = min(customers, math.ceil(1.25 * lower) + 3)
    problem = _benchmark_problem(
        name, coords, demands, windows, services, ids, depot, fleet, capacity, provider
    )
    return Instance(name, "vrplib", problem, provider, numeric_ids=True)


# JSON -------------------------------------------------------------------------------------


def _place_to_json(place: Place) -> dict[str, float]:
    if isinstance(place, Location):
        return {"lat": place.lat, "lon": place.lon}
    return {"x": place.x, "y": place.y}


def _place_from_json(data: Mapping[str, Any]) -> Place:
    if "lat" in data:
        return Location(float(data["lat"]), float(data["lon"]))
    return Point(float(data["x"]), float(data["y"]))


def _window(data: Sequence[int]) -> TimeWindow:
    start, end = data
    return TimeWindow(int(start), int(end))


def problem_to_json(problem: RoutingProblem, *, convention: str | None = None) -> dict[str, Any]:
    """Our JSON problem format (see docs/routing.md); `convention` names a planar metric."""
    out: dict[str, Any] = {
        "format": JSON_FORMAT,
        "name": problem.name,
        "id_check_s": problem.id_check_s,
        "depots": [{"id": d.id, "location": _place_to_json(d.location)} for d in problem.depots],
        "vehicles": [],
        "stops": [],
        "started": [],
    }
    if convention:
        out["convention"] = convention
    for v in problem.vehicles:
        item: dict[str, Any] = {
            "id": v.id,
            "depot_id": v.depot_id,
            "shift": [v.shift.start_s, v.shift.end_s],
            "capacity_parcels": v.capacity_parcels,
            "capacity_volume_ml": v.capacity_volume_ml,
            "fridge": v.fridge,
            "cost_per_km": v.cost_per_km,
            "cost_per_hour": v.cost_per_hour,
        }
        if v.start is not None:
            item["start"] = _place_to_json(v.start)
        if v.end is not None:
            item["end"] = _place_to_json(v.end)
        if v.rest_break is not None:
            item["rest_break"] = {
                "window": [v.rest_break.window.start_s, v.rest_break.window.end_s],
                "duration_s": v.rest_break.duration_s,
            }
        out["vehicles"].append(item)
    for s in problem.stops:
        out["stops"].append(
            {
                "id": s.id,
                "location": _place_to_json(s.location),
                "windows": [[w.start_s, w.end_s] for w in s.windows],
                "service_s": s.service_s,
                "parcels": s.parcels,
                "volume_ml": s.volume_ml,
                "needs_fridge": s.needs_fridge,
                "controlled_drug": s.controlled_drug,
                "priority": s.priority,
                "drop_penalty": s.drop_penalty,
                "pinned_vehicle": s.pinned_vehicle,
            }
        )
    for r in problem.started:
        out["started"].append(
            {
                "vehicle_id": r.vehicle_id,
                "position": _place_to_json(r.position),
                "time_s": r.time_s,
                "done": list(r.done),
                "on_board": list(r.on_board),
            }
        )
    return out


def problem_from_json(data: Mapping[str, Any]) -> RoutingProblem:
    """Build a problem from our JSON format (raises ProblemError/KeyError on bad input)."""
    vehicles = []
    for v in data["vehicles"]:
        rest = v.get("rest_break")
        vehicles.append(
            Vehicle(
                id=str(v["id"]),
                depot_id=str(v["depot_id"]),
                shift=_window(v["shift"]),
                capacity_parcels=int(v["capacity_parcels"]),
                capacity_volume_ml=v.get("capacity_volume_ml"),
                fridge=bool(v.get("fridge", False)),
                cost_per_km=int(v.get("cost_per_km", 1)),
                cost_per_hour=int(v.get("cost_per_hour", 0)),
                start=_place_from_json(v["start"]) if v.get("start") else None,
                end=_place_from_json(v["end"]) if v.get("end") else None,
                rest_break=Break(_window(rest["window"]), int(rest["duration_s"]))
                if rest
                else None,
            )
        )
    stops = [
        Stop(
            id=str(s["id"]),
            location=_place_from_json(s["location"]),
            windows=tuple(_window(w) for w in s.get("windows", ())),
            service_s=int(s.get("service_s", 0)),
            parcels=int(s.get("parcels", 1)),
            volume_ml=int(s.get("volume_ml", 0)),
            needs_fridge=bool(s.get("needs_fridge", False)),
            controlled_drug=bool(s.get("controlled_drug", False)),
            priority=int(s.get("priority", 0)),
            drop_penalty=s.get("drop_penalty"),
            pinned_vehicle=s.get("pinned_vehicle"),
        )
        for s in data["stops"]
    ]
    started = [
        StartedRoute(
            vehicle_id=str(r["vehicle_id"]),
            position=_place_from_json(r["position"]),
            time_s=int(r["time_s"]),
            done=tuple(str(x) for x in r.get("done", ())),
            on_board=tuple(str(x) for x in r.get("on_board", ())),
        )
        for r in data.get("started", ())
    ]
    return RoutingProblem(
        depots=tuple(Depot(str(d["id"]), _place_from_json(d["location"])) for d in data["depots"]),
        vehicles=tuple(vehicles),
        stops=tuple(stops),
        started=tuple(started),
        id_check_s=int(data.get("id_check_s", 120)),
        name=str(data.get("name", "")),
    )


def _from_json_text(text: str, default_name: str) -> Instance:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InstanceError(f"invalid JSON: {err.msg} at line {err.lineno}") from err
    if not isinstance(data, dict):
        raise InstanceError("JSON instance must be an object")
    problem = problem_from_json(data)
    convention = data.get("convention")
    provider: MatrixProvider | None = None
    if convention is not None:
        if convention not in ("dimacs_trunc1", "cvrplib_nint"):
            raise InstanceError(f"unknown convention {convention!r}")
        provider = PlanarMatrix(convention)
    name = problem.name or default_name
    return Instance(name, "json", problem, provider, numeric_ids=False)
