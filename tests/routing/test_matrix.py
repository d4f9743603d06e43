from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from geopy.distance import geodesic

from routing import (
    CachedMatrix,
    GeodesicMatrix,
    Location,
    MatrixError,
    OsrmMatrix,
    PlanarMatrix,
    Point,
    SpeedProfile,
    default_provider,
)
from routing.matrix import EXACT_GEODESIC_MAX_PLACES

LONDON = [Location(51.5074, -0.1278), Location(51.5155, -0.0922), Location(51.4975, -0.1357)]


def test_dimacs_truncates_each_arc_to_one_decimal() -> None:
    m = PlanarMatrix("dimacs_trunc1").build([Point(0, 0), Point(1, 1), Point(3, 4)])
    # sqrt(2) = 1.414.. -> 14 ticks; 5 exactly -> 50 ticks; sqrt(13) = 3.605.. -> 36.
    assert m.distance_m.tolist() == [[0, 14, 50], [14, 0, 36], [50, 36, 0]]
    assert (m.duration_s == m.distance_m).all()
    assert m.scale == 10


def test_cvrplib_rounds_to_nearest_integer() -> None:
    m = PlanarMatrix("cvrplib_nint").build([Point(0, 0), Point(1, 1), Point(1.5, 0)])
    assert m.distance_m.tolist() == [[0, 1, 2], [1, 0, 1], [2, 1, 0]]
    assert m.scale == 1


def test_geodesic_matches_geopy_times_detour() -> None:
    m = GeodesicMatrix(detour_factor=1.25).build(LONDON)
    expected = geodesic((LONDON[0].lat, LONDON[0].lon), (LONDON[1].lat, LONDON[1].lon)).meters
    assert m.distance_m[0, 1] == round(expected * 1.25)
    assert (m.distance_m == m.distance_m.T).all()


def test_vectorised_great_circle_for_many_places_is_close_to_geodesic() -> None:
    rng = np.random.default_rng(3)
    places = [
        Location(float(51.4 + rng.random() * 0.2), float(-0.3 + rng.random() * 0.4))
        for _ in range(EXACT_GEODESIC_MAX_PLACES + 5)
    ]
    m = GeodesicMatrix(detour_factor=1.0).build(places)
    for i, j in [(0, 1), (5, 100), (17, 150)]:
        exact = geodesic((places[i].lat, places[i].lon), (places[j].lat, places[j].lon)).meters
        assert abs(m.distance_m[i, j] - exact) <= 0.005 * exact + 1


def test_rush_hour_is_slower() -> None:
    profile = SpeedProfile(bands=((8 * 3600, 9 * 3600, 10.0),), default_kmh=20.0)
    provider = GeodesicMatrix(speed=profile)
    rush = provider.build(LONDON, [8 * 3600 + 60] * 3)
    calm = provider.build(LONDON, [12 * 3600] * 3)
    assert rush.duration_s[0, 1] == pytest.approx(2 * calm.duration_s[0, 1], abs=2)
    assert (rush.distance_m == calm.distance_m).all()


def test_departures_read_the_local_clock_across_a_clock_change() -> None:
    from dataclasses import replace

    from routing import Depot, RoutingProblem, Stop, TimeWindow, Vehicle
    from routing.matrix import departure_times

    problem = RoutingProblem(
        depots=(Depot(id="d", location=LONDON[0]),),
        vehicles=(Vehicle(id="v", depot_id="d", shift=TimeWindow(0, 20 * 3600),
                          capacity_parcels=10),),
        stops=(Stop(id="s", location=LONDON[1], windows=(TimeWindow(15 * 3600, 17 * 3600),)),))
    assert departure_times(problem, [LONDON[1]]) == [15 * 3600]
    # The day the clocks go forward: 15 elapsed hours after midnight is 16:00 on the wall,
    # inside the evening rush.
    forward = replace(problem, clock_offset_s=3600)
    assert departure_times(forward, [LONDON[1]]) == [16 * 3600]
    assert SpeedProfile().kmh_at(departure_times(forward, [LONDON[1]])[0]) == 18.0


def test_cache_returns_the_same_matrix() -> None:
    cached = CachedMatrix(GeodesicMatrix(), max_entries=1)
    first = cached.build(LONDON, [0, 0, 0])
    assert cached.build(LONDON, [0, 0, 0]) is first
    assert cached.hits == 1
    cached.build(LONDON[:2], [0, 0])
    assert cached.build(LONDON, [0, 0, 0]) is not first  # evicted


class _FakeOsrm(BaseHTTPRequestHandler):
    """A stand-in for OSRM's table service: distance = 1000 x |index difference|."""

    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        url = urlsplit(self.path)
        type(self).requests.append(url.path)
        coords = url.path.rsplit("/", 1)[1].split(";")
        if "fail" in url.path:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b'{"code": "InvalidQuery"}')
            return
        query = parse_qs(url.query)
        sources = [int(i) for i in query["sources"][0].split(";")]
        targets = [int(i) for i in query["destinations"][0].split(";")]
        lons = [float(c.split(",")[0]) for c in coords]
        distances = [[abs(lons[s] - lons[t]) * 1000 for t in targets] for s in sources]
        body = {
            "code": "Ok",
            "distances": distances,
            "durations": [[d / 10 for d in row] for row in distances],
        }
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def osrm_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOsrm)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeOsrm.requests = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_osrm_table_in_blocks(osrm_url: str) -> None:
    places = [Location(0.0, float(lon)) for lon in range(5)]
    m = OsrmMatrix(osrm_url, block=2).build(places)
    assert m.distance_m[0, 4] == 4000 and m.distance_m[3, 1] == 2000
    assert m.duration_s[0, 4] == 400
    assert len(_FakeOsrm.requests) == 9  # 3 x 3 blocks of at most 2 x 2


def test_osrm_errors_become_matrix_errors(osrm_url: str) -> None:
    with pytest.raises(MatrixError):
        OsrmMatrix(osrm_url + "/fail").build(LONDON)
    with pytest.raises(MatrixError):
        OsrmMatrix("http://127.0.0.1:9", timeout_s=1).build(LONDON)


def test_default_provider_reads_osrm_url_when_called(
    monkeypatch: pytest.MonkeyPatch, osrm_url: str
) -> None:
    monkeypatch.delenv("OSRM_URL", raising=False)
    assert isinstance(default_provider(LONDON), CachedMatrix)
    assert isinstance(default_provider(LONDON).provider, GeodesicMatrix)  # type: ignore[attr-defined]
    monkeypatch.setenv("OSRM_URL", osrm_url)
    chosen = default_provider(LONDON)
    assert isinstance(chosen.provider, OsrmMatrix)  # type: ignore[attr-defined]
    assert isinstance(default_provider([Point(0, 0)]).provider, PlanarMatrix)  # type: ignore[attr-defined]
