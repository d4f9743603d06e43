"""Input data of a routing problem: frozen dataclasses validated on construction.

Times are integer seconds (from midnight of the planning day, or any fixed origin), distances
integer metres. Benchmark instances use the same types with "ticks" instead: see
`routing.matrix.PlanarMatrix`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

#: Extra service time for a controlled-drug delivery, where the courier checks ID.
DEFAULT_ID_CHECK_S = 120


class ProblemError(ValueError):
    """Raised when problem data is inconsistent (bad ids, negative times, ...)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ProblemError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_nonneg_int(value: object, name: str) -> None:
    _require(_is_int(value), f"{name} must be an integer, got {value!r}")
    assert isinstance(value, int)
    _require(value >= 0, f"{name} must be >= 0, got {value}")


def _freeze(obj: object, name: str, items: Iterable[object]) -> None:
    object.__setattr__(obj, name, tuple(items))


@dataclass(frozen=True)
class TimeWindow:
    """A closed interval `[start_s, end_s]` of integer seconds."""

    start_s: int
    end_s: int

    def __post_init__(self) -> None:
        _check_nonneg_int(self.start_s, "TimeWindow.start_s")
        _check_nonneg_int(self.end_s, "TimeWindow.end_s")
        _require(self.start_s <= self.end_s, f"empty time window {self.start_s}..{self.end_s}")

    def __contains__(self, time_s: object) -> bool:
        return _is_int(time_s) and self.start_s <= time_s <= self.end_s  # type: ignore[operator]


@dataclass(frozen=True)
class Location:
    """A point on the earth, in decimal degrees (WGS 84)."""

    lat: float
    lon: float

    def __post_init__(self) -> None:
        _require(isinstance(self.lat, int | float), "latitude must be a number")
        _require(isinstance(self.lon, int | float), "longitude must be a number")
        _require(-90.0 <= self.lat <= 90.0, f"latitude out of range: {self.lat}")
        _require(-180.0 <= self.lon <= 180.0, f"longitude out of range: {self.lon}")


@dataclass(frozen=True)
class Point:
    """A point in a plane (benchmark instances); distance is Euclidean in instance units."""

    x: float
    y: float

    def __post_init__(self) -> None:
        _require(isinstance(self.x, int | float), "x must be a number")
        _require(isinstance(self.y, int | float), "y must be a number")


Place = Location | Point


@dataclass(frozen=True)
class Depot:
    """A pharmacy branch vans leave from and return to."""

    id: str
    location: Place

    def __post_init__(self) -> None:
        _require(isinstance(self.id, str) and self.id != "", "Depot.id must be a non-empty str")
        _require(isinstance(self.location, Location | Point), f"depot {self.id}: bad location")


@dataclass(frozen=True)
class Break:
    """A driver break of `duration_s` that must start within `window`."""

    window: TimeWindow
    duration_s: int

    def __post_init__(self) -> None:
        _require(isinstance(self.window, TimeWindow), "Break.window must be a TimeWindow")
        _check_nonneg_int(self.duration_s, "Break.duration_s")


@dataclass(frozen=True)
class Vehicle:
    """A van and its driver's shift.

    Args:
        id: unique vehicle id.
        depot_id: the depot it starts and ends at, unless `start`/`end` say otherwise.
        shift: the route must leave no earlier than `shift.start_s` and be back by `shift.end_s`.
        capacity_parcels: how many parcels fit.
        capacity_volume_ml: load volume; None means volume is not limiting.
        fridge: whether it can carry cold-chain items.
        cost_per_km: running cost in minor currency units per km.
        cost_per_hour: driver cost in minor currency units per hour of route duration.
        start: start place if not the depot (e.g. the driver's home).
        end: end place if not the depot.
        rest_break: an optional break the driver must take during the shift.
    """

    id: str
    depot_id: str
    shift: TimeWindow
    capacity_parcels: int
    capacity_volume_ml: int | None = None
    fridge: bool = False
    cost_per_km: int = 1
    cost_per_hour: int = 0
    start: Place | None = None
    end: Place | None = None
    rest_break: Break | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.id, str) and self.id != "", "Vehicle.id must be a non-empty str")
        _require(isinstance(self.shift, TimeWindow), f"vehicle {self.id}: shift must be a window")
        _check_nonneg_int(self.capacity_parcels, f"vehicle {self.id}: capacity_parcels")
        if self.capacity_volume_ml is not None:
            _check_nonneg_int(self.capacity_volume_ml, f"vehicle {self.id}: capacity_volume_ml")
        _check_nonneg_int(self.cost_per_km, f"vehicle {self.id}: cost_per_km")
        _check_nonneg_int(self.cost_per_hour, f"vehicle {self.id}: cost_per_hour")
        _require(
            self.cost_per_km + self.cost_per_hour > 0,
            f"vehicle {self.id}: cost_per_km and cost_per_hour cannot both be 0",
        )
        for name in ("start", "end"):
            place = getattr(self, name)
            _require(
                place is None or isinstance(place, Location | Point),
                f"vehicle {self.id}: bad {name} place",
            )
        if self.rest_break is not None:
            window = self.rest_break.window
            _require(
                self.shift.start_s <= window.start_s
                and window.start_s + self.rest_break.duration_s <= self.shift.end_s,
                f"vehicle {self.id}: break cannot be taken within the shift",
            )


@dataclass(frozen=True)
class Stop:
    """A delivery.

    Args:
        id: unique stop id.
        location: where to deliver.
        windows: allowed service *start* times; empty means any time in the shift. Sorted,
            non-overlapping.
        service_s: time spent at the door.
        parcels: parcels delivered (capacity dimension 1).
        volume_ml: volume delivered (capacity dimension 2).
        needs_fridge: only fridge vans may carry it.
        controlled_drug: the courier checks ID, which adds the problem's `id_check_s`.
        priority: 0 or more; an optional stop's drop penalty is multiplied by 1 + priority.
        drop_penalty: cost in minor units of not delivering today; None means mandatory.
        pinned_vehicle: the vehicle that must serve it (e.g. already loaded).
    """

    id: str
    location: Place
    windows: tuple[TimeWindow, ...] = ()
    service_s: int = 0
    parcels: int = 1
    volume_ml: int = 0
    needs_fridge: bool = False
    controlled_drug: bool = False
    priority: int = 0
    drop_penalty: int | None = None
    pinned_vehicle: str | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.id, str) and self.id != "", "Stop.id must be a non-empty str")
        _require(isinstance(self.location, Location | Point), f"stop {self.id}: bad location")
        _freeze(self, "windows", self.windows)
        for window in self.windows:
            _require(isinstance(window, TimeWindow), f"stop {self.id}: windows must be windows")
        for first, second in zip(self.windows, self.windows[1:], strict=False):
            _require(
                first.end_s < second.start_s,
                f"stop {self.id}: windows must be sorted and must not overlap",
            )
        _check_nonneg_int(self.service_s, f"stop {self.id}: service_s")
        _check_nonneg_int(self.parcels, f"stop {self.id}: parcels")
        _check_nonneg_int(self.volume_ml, f"stop {self.id}: volume_ml")
        _check_nonneg_int(self.priority, f"stop {self.id}: priority")
        if self.drop_penalty is not None:
            _check_nonneg_int(self.drop_penalty, f"stop {self.id}: drop_penalty")

    @property
    def mandatory(self) -> bool:
        """True when the stop has no drop penalty, i.e. it must be delivered."""
        return self.drop_penalty is None


@dataclass(frozen=True)
class StartedRoute:
    """A route already under way, for re-optimisation.

    Args:
        vehicle_id: the van on the road.
        position: where it is now (or where it will be free next).
        time_s: when it is there.
        done: stops already delivered; they are not planned again.
        on_board: stops loaded in this van and not yet delivered; they stay with it.
    """

    vehicle_id: str
    position: Place
    time_s: int
    done: tuple[str, ...] = ()
    on_board: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(isinstance(self.position, Location | Point), "StartedRoute: bad position")
        _check_nonneg_int(self.time_s, f"started route of {self.vehicle_id}: time_s")
        _freeze(self, "done", self.done)
        _freeze(self, "on_board", self.on_board)
        _require(
            not set(self.done) & set(self.on_board),
            f"started route of {self.vehicle_id}: a stop is both done and on board",
        )


@dataclass(frozen=True)
class RoutingProblem:
    """A day (or the rest of a day) of deliveries to plan.

    Args:
        depots: depots vehicles start from.
        vehicles: available vehicles; each is used at most once.
        stops: deliveries.
        started: routes already under way (re-optimisation); their vehicles start at the given
            position and time, their `done` stops are skipped and their `on_board` stops stay
            with them.
        id_check_s: extra service time at controlled-drug stops.
        name: free text, e.g. the instance name.
        clock_offset_s: added to a time to read the local clock (time-of-day speeds): 0
            unless times are elapsed seconds across a clock change (+3600 on the day the
            clocks go forward, -3600 when they go back).
    """

    depots: tuple[Depot, ...]
    vehicles: tuple[Vehicle, ...]
    stops: tuple[Stop, ...]
    started: tuple[StartedRoute, ...] = ()
    id_check_s: int = DEFAULT_ID_CHECK_S
    name: str = ""
    clock_offset_s: int = 0
    _index: dict[str, dict[str, int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for name in ("depots", "vehicles", "stops", "started"):
            _freeze(self, name, getattr(self, name))
        _check_nonneg_int(self.id_check_s, "id_check_s")
        _require(len(self.depots) > 0, "a problem needs at least one depot")
        _require(len(self.vehicles) > 0, "a problem needs at least one vehicle")
        index: dict[str, dict[str, int]] = {}
        groups: tuple[tuple[str, tuple[Depot | Vehicle | Stop, ...], type], ...] = (
            ("depot", self.depots, Depot),
            ("vehicle", self.vehicles, Vehicle),
            ("stop", self.stops, Stop),
        )
        for kind, items, cls in groups:
            ids: dict[str, int] = {}
            for position, item in enumerate(items):
                _require(isinstance(item, cls), f"{kind}s must be {cls.__name__} objects")
                item_id: str = item.id
                _require(item_id not in ids, f"duplicate {kind} id {item_id!r}")
                ids[item_id] = position
            index[kind] = ids
        object.__setattr__(self, "_index", index)

        kinds = {type(d.location) for d in self.depots} | {type(s.location) for s in self.stops}
        for vehicle in self.vehicles:
            kinds |= {type(p) for p in (vehicle.start, vehicle.end) if p is not None}
            _require(
                vehicle.depot_id in index["depot"],
                f"vehicle {vehicle.id}: unknown depot {vehicle.depot_id!r}",
            )
        for stop in self.stops:
            _require(
                stop.pinned_vehicle is None or stop.pinned_vehicle in index["vehicle"],
                f"stop {stop.id}: pinned to unknown vehicle {stop.pinned_vehicle!r}",
            )
        seen_vehicles: set[str] = set()
        claimed: dict[str, str] = {}
        for started in self.started:
            _require(isinstance(started, StartedRoute), "started must be StartedRoute objects")
            _require(
                started.vehicle_id in index["vehicle"],
                f"started route for unknown vehicle {started.vehicle_id!r}",
            )
            _require(
                started.vehicle_id not in seen_vehicles,
                f"two started routes for vehicle {started.vehicle_id}",
            )
            seen_vehicles.add(started.vehicle_id)
            kinds.add(type(started.position))
            for stop_id in started.done + started.on_board:
                _require(stop_id in index["stop"], f"started route: unknown stop {stop_id!r}")
                _require(stop_id not in claimed, f"stop {stop_id} is in two started routes")
                claimed[stop_id] = started.vehicle_id
            for stop_id in started.on_board:
                pinned = self.stops[index["stop"][stop_id]].pinned_vehicle
                _require(
                    pinned in (None, started.vehicle_id),
                    f"stop {stop_id} is on board {started.vehicle_id} but pinned to {pinned}",
                )
        _require(len(kinds) == 1, "mix of geographic Locations and planar Points")

    def stop(self, stop_id: str) -> Stop:
        """The stop with this id (KeyError if unknown)."""
        return self.stops[self._index["stop"][stop_id]]

    def vehicle(self, vehicle_id: str) -> Vehicle:
        """The vehicle with this id (KeyError if unknown)."""
        return self.vehicles[self._index["vehicle"][vehicle_id]]

    def depot(self, depot_id: str) -> Depot:
        """The depot with this id (KeyError if unknown)."""
        return self.depots[self._index["depot"][depot_id]]

    def service_s(self, stop: Stop) -> int:
        """Time at the door, including the ID check for controlled drugs."""
        return stop.service_s + (self.id_check_s if stop.controlled_drug else 0)

    def started_route(self, vehicle_id: str) -> StartedRoute | None:
        """The started route of this vehicle, if it is on the road."""
        for started in self.started:
            if started.vehicle_id == vehicle_id:
                return started
        return None

    def done_stop_ids(self) -> frozenset[str]:
        """Stops already delivered on started routes."""
        return frozenset(s for started in self.started for s in started.done)

    def required_vehicle(self, stop: Stop) -> str | None:
        """The vehicle a stop must go with: its pin, or the van it is on board."""
        if stop.pinned_vehicle is not None:
            return stop.pinned_vehicle
        for started in self.started:
            if stop.id in started.on_board:
                return started.vehicle_id
        return None

    def start_of(self, vehicle: Vehicle) -> tuple[Place, int]:
        """Where and from when a vehicle is available (its started position if on the road)."""
        started = self.started_route(vehicle.id)
        if started is not None:
            return started.position, max(started.time_s, vehicle.shift.start_s)
        place = (
            vehicle.start if vehicle.start is not None else self.depot(vehicle.depot_id).location
        )
        return place, vehicle.shift.start_s

    def end_of(self, vehicle: Vehicle) -> Place:
        """Where a vehicle's route ends."""
        return vehicle.end if vehicle.end is not None else self.depot(vehicle.depot_id).location

    def can_carry(self, vehicle: Vehicle, stop: Stop) -> bool:
        """Static compatibility: fridge, pins, on-board loads and started vans' loads."""
        if stop.needs_fridge and not vehicle.fridge:
            return False
        required = self.required_vehicle(stop)
        if required is not None:
            return required == vehicle.id
        # A van already on the road cannot pick up parcels that were not loaded.
        return self.started_route(vehicle.id) is None
