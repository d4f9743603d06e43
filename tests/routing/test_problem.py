from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing import (
    Break,
    Depot,
    Location,
    Point,
    ProblemError,
    RoutingProblem,
    StartedRoute,
    Stop,
    TimeWindow,
)
from tests.routing.helpers import line_problem, van


@given(st.integers(-5, 100), st.integers(-5, 100))
def test_time_window_accepts_exactly_ordered_non_negative_bounds(start: int, end: int) -> None:
    if 0 <= start <= end:
        window = TimeWindow(start, end)
        assert start in window and end in window
    else:
        with pytest.raises(ProblemError):
            TimeWindow(start, end)


@given(st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_location_range(lat: float, lon: float) -> None:
    if -90 <= lat <= 90 and -180 <= lon <= 180:
        assert Location(lat, lon).lat == lat
    else:
        with pytest.raises(ProblemError):
            Location(lat, lon)


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 50)).map(sorted),
        min_size=0,
        max_size=4,
    )
)
def test_stop_windows_must_be_sorted_and_disjoint(pairs: list[list[int]]) -> None:
    windows = [TimeWindow(a, b) for a, b in pairs]
    ok = all(w1.end_s < w2.start_s for w1, w2 in zip(windows, windows[1:], strict=False))
    if ok:
        stop = Stop("s", Point(0, 0), windows=windows)  # type: ignore[arg-type]
        assert isinstance(stop.windows, tuple)  # lists are frozen into tuples
    else:
        with pytest.raises(ProblemError):
            Stop("s", Point(0, 0), windows=tuple(windows))


@pytest.mark.parametrize(
    "field, value",
    [("service_s", -1), ("parcels", -2), ("priority", -1), ("drop_penalty", -5), ("parcels", 1.5)],
)
def test_stop_rejects_bad_numbers(field: str, value: object) -> None:
    with pytest.raises(ProblemError):
        Stop("s", Point(0, 0), **{field: value})  # type: ignore[arg-type]


def test_problem_is_frozen_and_indexes_ids() -> None:
    problem = line_problem()
    assert problem.stop("s10").location == Point(10.0, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"vehicles": (van("v1"), van("v1"))}, "duplicate vehicle"),
        ({"vehicles": (van("v1", depot_id="nowhere"),)}, "unknown depot"),
        ({"stops": (Stop("a", Point(1, 1), pinned_vehicle="ghost"),)}, "unknown vehicle"),
        ({"stops": (Stop("a", Location(51.5, -0.1)),)}, "mix of geographic"),
        ({"vehicles": ()}, "at least one vehicle"),
        ({"started": (StartedRoute("ghost", Point(0, 0), 5),)}, "unknown vehicle"),
        ({"started": (StartedRoute("v1", Point(0, 0), 5, done=("nope",)),)}, "unknown stop"),
    ],
)
def test_problem_validation(change: dict[str, object], message: str) -> None:
    with pytest.raises(ProblemError, match=message):
        line_problem(**change)


def test_break_must_fit_in_shift() -> None:
    with pytest.raises(ProblemError, match="break"):
        van("v1", shift=TimeWindow(0, 100), rest_break=Break(TimeWindow(90, 95), 30))


def test_vehicle_needs_some_cost() -> None:
    with pytest.raises(ProblemError):
        van("v1", cost_per_km=0, cost_per_hour=0)


def test_controlled_drugs_take_longer() -> None:
    problem = RoutingProblem(
        depots=(Depot("d", Point(0, 0)),),
        vehicles=(van("v1"),),
        stops=(Stop("a", Point(1, 0), service_s=60, controlled_drug=True),),
        id_check_s=90,
    )
    assert problem.service_s(problem.stop("a")) == 150
