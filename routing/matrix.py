"""Travel matrices: distances and travel times between places, as integers.

All scaling to integers happens here. Real problems use metres and seconds. Benchmark
instances (`PlanarMatrix`) use "ticks": the DIMACS VRPTW convention truncates each Euclidean
distance to one decimal, so one tick is 0.1 instance unit and distances, times, windows and
service durations are all multiplied by `PlanarMatrix.scale` = 10; the CVRPLIB convention
rounds each distance to the nearest integer (scale 1). Either way the solver's objective is an
exact integer.

Providers:
- `GeodesicMatrix` (offline default): geodesic distance (geopy) times a detour factor, with
  the speed depending on the time of day the trip starts.
- `OsrmMatrix`: road distances and times from an OSRM `table` service.
- `PlanarMatrix`: Euclidean distances in the plane for benchmark instances.
- `CachedMatrix`: wraps any provider and remembers recent matrices.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from routing.problem import Location, Place, Point, RoutingProblem

logger = logging.getLogger(__name__)

IntMatrix = npt.NDArray[np.int64]

#: Up to this many places, each pair goes through geopy's exact (Karney) geodesic; above it
#: (tens of µs a pair would take seconds) a vectorised great-circle formula on geopy's earth
#: radius is used, which differs by well under 0.5% - far less than the detour factor's error.
EXACT_GEODESIC_MAX_PLACES = 150


class MatrixError(RuntimeError):
    """Raised when a provider cannot produce a matrix (bad places, service down, ...)."""


@dataclass(frozen=True)
class TravelMatrix:
    """Square integer matrices over a list of places (row = from, column = to).

    Attributes:
        distance_m: distances (metres, or ticks for benchmark instances).
        duration_s: travel times (seconds, or ticks).
        scale: how many matrix units make one reported unit (10 for DIMACS ticks, else 1).
    """

    distance_m: IntMatrix
    duration_s: IntMatrix
    scale: int = 1

    def __post_init__(self) -> None:
        shape = self.distance_m.shape
        if len(shape) != 2 or shape[0] != shape[1] or self.duration_s.shape != shape:
            raise MatrixError(f"matrices must be square and of equal shape, got {shape}")
        if shape[0] and (self.distance_m.min() < 0 or self.duration_s.min() < 0):
            raise MatrixError("negative distance or duration")

    def __len__(self) -> int:
        return int(self.distance_m.shape[0])


class MatrixProvider(Protocol):
    """Anything that turns places into a `TravelMatrix`."""

    def build(
        self, places: Sequence[Place], departure_s: Sequence[int] | None = None
    ) -> TravelMatrix:
        """Matrices between `places`; `departure_s[i]` is when trips from place i usually start."""
        ...


@dataclass(frozen=True)
class PlanarMatrix:
    """Euclidean distances between `Point`s under a benchmark convention.

    `dimacs_trunc1`: floor(10 * d) ticks of 0.1 unit, travel time equal to distance.
    `cvrplib_nint`: d rounded to the nearest integer, travel time equal to distance.
    """

    convention: Literal["dimacs_trunc1", "cvrplib_nint"] = "dimacs_trunc1"

    @property
    def scale(self) -> int:
        """Matrix units per instance unit (multiply windows and service times by this)."""
        return 10 if self.convention == "dimacs_trunc1" else 1

    def to_ticks(self, value: float) -> int:
        """An instance time or quantity in matrix units (times are integral in benchmarks)."""
        return int(round(value * self.scale))

    def build(
        self, places: Sequence[Place], departure_s: Sequence[int] | None = None
    ) -> TravelMatrix:
        """Matrices between points; `departure_s` is ignored."""
        if not all(isinstance(p, Point) for p in places):
            raise MatrixError("PlanarMatrix needs Point places")
        xs = np.array([p.x for p in places if isinstance(p, Point)], dtype=np.float64)
        ys = np.array([p.y for p in places if isinstance(p, Point)], dtype=np.float64)
        dx = xs[:, None] - xs[None, :]
        dy = ys[:, None] - ys[None, :]
        squared = dx * dx
        squared += dy * dy
        if self.convention == "dimacs_trunc1":
            # sqrt(100 * s) is correctly rounded, so for integral coordinates its floor is the
            # exact truncation of 10 * d (no 10 * 0.1 float surprises).
            squared *= 100.0
            ticks = np.floor(np.sqrt(squared, out=squared) + 1e-9)
        else:
            ticks = np.floor(np.sqrt(squared, out=squared) + 0.5)
        matrix = ticks.astype(np.int64)
        matrix.setflags(write=False)
        # Travel time equals distance: one read-only array serves as both.
        return TravelMatrix(matrix, matrix, scale=self.scale)


@dataclass(frozen=True)
class SpeedProfile:
    """Average speed by time of day: `bands` of (start_s, end_s, km/h), else `default_kmh`."""

    bands: tuple[tuple[int, int, float], ...] = (
        (7 * 3600, 9 * 3600 + 1800, 18.0),  # morning rush
        (16 * 3600, 18 * 3600 + 1800, 18.0),  # evening rush
    )
    default_kmh: float = 25.0

    def __post_init__(self) -> None:
        if self.default_kmh <= 0 or any(kmh <= 0 or a > b for a, b, kmh in self.bands):
            raise ValueError("speeds must be positive and bands must have start <= end")

    def kmh_at(self, time_s: int) -> float:
        """Speed for a trip starting at `time_s` (seconds after midnight, wraps per day)."""
        time_of_day = time_s % 86_400
        for start, end, kmh in self.bands:
            if start <= time_of_day < end:
                return kmh
        return self.default_kmh


def _geodesic_metres(places: Sequence[Location]) -> npt.NDArray[np.float64]:
    # Imported here: geopy pulls in all its geocoders (~0.5 s), which planar benchmark runs
    # under a wall-clock limit should not pay for.
    from geopy import distance as geo_distance  # type: ignore[import-untyped]

    n = len(places)
    out = np.zeros((n, n), dtype=np.float64)
    if n <= EXACT_GEODESIC_MAX_PLACES:
        for i in range(n):
            for j in range(i + 1, n):
                a, b = places[i], places[j]
                metres = geo_distance.geodesic((a.lat, a.lon), (b.lat, b.lon)).meters
                out[i, j] = out[j, i] = metres
        return out
    lat = np.radians([p.lat for p in places])
    lon = np.radians([p.lon for p in places])
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    hav = (
        np.sin(dlat / 2) ** 2 + np.cos(lat)[:, None] * np.cos(lat)[None, :] * np.sin(dlon / 2) ** 2
    )
    result: npt.NDArray[np.float64] = (
        2 * geo_distance.EARTH_RADIUS * 1000.0 * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0)))
    )
    return result


@dataclass(frozen=True)
class GeodesicMatrix:
    """Offline estimate: geodesic distance times `detour_factor`, speed by time of day."""

    detour_factor: float = 1.3
    speed: SpeedProfile = field(default_factory=SpeedProfile)

    def build(
        self, places: Sequence[Place], departure_s: Sequence[int] | None = None
    ) -> TravelMatrix:
        """Distances (m) and durations (s); row i uses the speed at `departure_s[i]`."""
        locations = [p for p in places if isinstance(p, Location)]
        if len(locations) != len(places):
            raise MatrixError("GeodesicMatrix needs Location places")
        metres = _geodesic_metres(locations) * self.detour_factor
        departures = list(departure_s) if departure_s is not None else [0] * len(places)
        if len(departures) != len(places):
            raise MatrixError("departure_s must have one entry per place")
        metres_per_s = np.array([self.speed.kmh_at(t) / 3.6 for t in departures])
        distance = np.rint(metres).astype(np.int64)
        duration = np.ceil(metres / metres_per_s.reshape(-1, 1)).astype(np.int64)
        return TravelMatrix(distance, duration)


@dataclass(frozen=True)
class OsrmMatrix:
    """Road distances and durations from an OSRM server's `table` service.

    OSRM has no time-of-day model, so `departure_s` is ignored. Requests are split into blocks
    of `block` sources x `block` destinations to stay within the server's table size limit.
    """

    url: str
    profile: str = "driving"
    timeout_s: float = 30.0
    block: int = 100

    def build(
        self, places: Sequence[Place], departure_s: Sequence[int] | None = None
    ) -> TravelMatrix:
        """Matrices from the server; raises MatrixError if it fails or a pair is unroutable."""
        locations = [p for p in places if isinstance(p, Location)]
        if len(locations) != len(places):
            raise MatrixError("OsrmMatrix needs Location places")
        n = len(locations)
        distance = np.zeros((n, n), dtype=np.int64)
        duration = np.zeros((n, n), dtype=np.int64)
        for src in range(0, n, self.block):
            for dst in range(0, n, self.block):
                sources = list(range(src, min(n, src + self.block)))
                targets = list(range(dst, min(n, dst + self.block)))
                dist_block, dur_block = self._table(locations, sources, targets)
                distance[np.ix_(sources, targets)] = dist_block
                duration[np.ix_(sources, targets)] = dur_block
        np.fill_diagonal(distance, 0)
        np.fill_diagonal(duration, 0)
        return TravelMatrix(distance, duration)

    def _table(
        self, locations: Sequence[Location], sources: list[int], targets: list[int]
    ) -> tuple[IntMatrix, IntMatrix]:
        coords = [locations[i] for i in sources] + [locations[i] for i in targets]
        path = ";".join(f"{p.lon:.6f},{p.lat:.6f}" for p in coords)
        src_ids = ";".join(str(i) for i in range(len(sources)))
        dst_ids = ";".join(str(len(sources) + i) for i in range(len(targets)))
        url = (
            f"{self.url.rstrip('/')}/table/v1/{self.profile}/{path}"
            f"?annotations=distance,duration&sources={src_ids}&destinations={dst_ids}"
        )
        import urllib.request  # only OSRM users pay for http.client's import

        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:  # noqa: S310
                payload = json.load(response)
        except (OSError, ValueError) as err:  # URLError is an OSError
            raise MatrixError(f"OSRM table request failed: {err}") from err
        if not isinstance(payload, Mapping) or payload.get("code") != "Ok":
            code = payload.get("code") if isinstance(payload, Mapping) else None
            raise MatrixError(f"OSRM answered {code!r}")
        try:
            dist = np.array(payload["distances"], dtype=np.float64)
            dur = np.array(payload["durations"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as err:
            raise MatrixError("OSRM answer lacks distances/durations (unroutable pair?)") from err
        shape = (len(sources), len(targets))
        if (
            dist.shape != shape
            or dur.shape != shape
            or np.isnan(dist).any()
            or np.isnan(dur).any()
        ):
            raise MatrixError("OSRM answer has missing entries (unroutable pair?)")
        return np.rint(dist).astype(np.int64), np.ceil(dur).astype(np.int64)


class CachedMatrix:
    """Remembers the last `max_entries` matrices of a provider, keyed by places and times."""

    def __init__(self, provider: MatrixProvider, max_entries: int = 8) -> None:
        self.provider = provider
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[object, ...], TravelMatrix] = OrderedDict()
        self.hits = 0

    def build(
        self, places: Sequence[Place], departure_s: Sequence[int] | None = None
    ) -> TravelMatrix:
        """The provider's matrix, from cache when the same request was seen recently."""
        key = (tuple(places), tuple(departure_s) if departure_s is not None else None)
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return cached
        matrix = self.provider.build(places, departure_s)
        self._cache[key] = matrix
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return matrix


_default_cache: dict[str, CachedMatrix] = {}


def default_provider(places: Sequence[Place]) -> MatrixProvider:
    """The provider `solve` uses when none is given.

    Planar points use the DIMACS convention; geographic locations use OSRM when the
    `OSRM_URL` environment variable is set (read now, not at import), else the geodesic
    estimate. Providers are cached per process.
    """
    if places and isinstance(places[0], Point):
        key, make = "planar", PlanarMatrix
        return _default_cache.setdefault(key, CachedMatrix(make()))
    osrm_url = os.environ.get("OSRM_URL", "").strip()
    if osrm_url:
        return _default_cache.setdefault(f"osrm:{osrm_url}", CachedMatrix(OsrmMatrix(osrm_url)))
    return _default_cache.setdefault("geodesic", CachedMatrix(GeodesicMatrix()))


def places_of(problem: RoutingProblem) -> list[Place]:
    """The distinct places of a problem, in a fixed order: depots, vehicle ends, stops."""
    seen: dict[Place, None] = {}
    for depot in problem.depots:
        seen.setdefault(depot.location, None)
    for vehicle in problem.vehicles:
        seen.setdefault(problem.start_of(vehicle)[0], None)
        seen.setdefault(problem.end_of(vehicle), None)
    for stop in problem.stops:
        seen.setdefault(stop.location, None)
    return list(seen)


def departure_times(problem: RoutingProblem, places: Sequence[Place]) -> list[int]:
    """When trips from each place typically start, for time-of-day speeds.

    A stop's trips start around the opening of its first window; other places use the
    earliest shift start. Times are on the local clock (``problem.clock_offset_s`` added).
    """
    shift_start = min(problem.start_of(v)[1] for v in problem.vehicles)
    when: dict[Place, int] = {}
    for stop in problem.stops:
        opening = stop.windows[0].start_s if stop.windows else shift_start
        when[stop.location] = min(when.get(stop.location, opening), opening)
    return [when.get(place, shift_start) + problem.clock_offset_s for place in places]


def build_matrix(
    problem: RoutingProblem, provider: MatrixProvider | None = None
) -> tuple[list[Place], TravelMatrix]:
    """The places of `problem` and the matrix between them (default provider if None)."""
    places = places_of(problem)
    chosen = provider if provider is not None else default_provider(places)
    matrix = chosen.build(places, departure_times(problem, places))
    if len(matrix) != len(places):
        raise MatrixError(f"provider returned {len(matrix)} rows for {len(places)} places")
    return places, matrix


__all__ = [
    "CachedMatrix",
    "GeodesicMatrix",
    "MatrixError",
    "MatrixProvider",
    "OsrmMatrix",
    "PlanarMatrix",
    "SpeedProfile",
    "TravelMatrix",
    "build_matrix",
    "default_provider",
    "departure_times",
    "places_of",
]
