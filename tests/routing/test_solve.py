"""solve() on small instances with known optima, one side constraint at a time."""

from __future__ import annotations

import pytest

from routing import (
    Break,
    Depot,
    Location,
    Point,
    RoutingProblem,
    StartedRoute,
    Stop,
    TimeWindow,
    check_feasibility,
    load_instance,
    reoptimise,
    solve,
)
from tests.routing.helpers import DATA, NINT, line_problem, van

LIMIT = 1.0


def _route_of(plan, vehicle_id: str) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    route = plan.route_of(vehicle_id)
    return route.stop_ids if route else ()


def test_line_problem_reaches_the_optimum() -> None:
    plan = solve(line_problem(), time_limit=LIMIT, provider=NINT)
    assert plan.is_feasible(), plan.violations
    assert plan.distance_m == 80
    assert check_feasibility(line_problem(), plan, provider=NINT) == []


@pytest.mark.parametrize("engines", [None, ("ortools",)])
def test_fridge_stops_ride_in_the_fridge_van(engines: tuple[str, ...] | None) -> None:
    stops = (
        Stop("cold", Point(10, 0), needs_fridge=True),
        Stop("warm", Point(11, 0)),
        Stop("west", Point(-10, 0)),
    )
    problem = line_problem(
        vehicles=(van("v1"), van("cool", fridge=True, capacity_parcels=1)), stops=stops
    )
    plan = solve(problem, time_limit=LIMIT, provider=NINT, engines=engines)
    assert plan.is_feasible(), plan.violations
    assert _route_of(plan, "cool") == ("cold",)
    # cool: 0 -> 10 -> 0; v1: 0 -> 11 -> -10 -> 0 (11 + 21 + 10).
    assert plan.distance_m == 20 + 42


@pytest.mark.parametrize("engines", [None, ("hybrid",), ("ortools",)])
def test_breaks_fit_their_window(engines: tuple[str, ...] | None) -> None:
    rest = Break(TimeWindow(15, 40), 30)
    problem = line_problem(vehicles=(van("v1", rest_break=rest),))
    plan = solve(problem, time_limit=LIMIT, provider=NINT, engines=engines)
    assert not plan.engine.startswith("pyvrp")  # PyVRP alone cannot express breaks
    assert plan.is_feasible(), plan.violations
    assert plan.distance_m == 80
    route = plan.routes[0]
    assert route.break_start_s is not None and 15 <= route.break_start_s <= 40


@pytest.mark.parametrize(
    "penalty, priority, served",
    [(500, 0, False), (300, 2, False), (300, 3, True), (2000, 0, True)],
)
def test_drop_penalty_and_priority_decide_optional_stops(
    penalty: int, priority: int, served: bool
) -> None:
    # Serving "far" adds 998 m at 1,000 per km: 998 minor units against penalty x (1 + priority).
    stops = (
        Stop("near", Point(1, 0)),
        Stop("far", Point(500, 0), drop_penalty=penalty, priority=priority),
    )
    problem = line_problem(vehicles=(van("v1", cost_per_km=1000),), stops=stops)
    plan = solve(problem, time_limit=LIMIT, provider=NINT)
    assert plan.is_feasible(), plan.violations
    assert ("far" in _route_of(plan, "v1")) is served
    assert plan.unserved_ids() == (() if served else ("far",))


@pytest.mark.parametrize("engines", [None, ("hybrid",)])
def test_pinned_stops_stay_with_their_vehicle(engines: tuple[str, ...] | None) -> None:
    stops = (
        Stop("a", Point(10, 0), pinned_vehicle="v2"),
        Stop("b", Point(11, 0), pinned_vehicle="v1"),
        Stop("c", Point(12, 0)),
    )
    problem = line_problem(vehicles=(van("v1"), van("v2")), stops=stops)
    plan = solve(problem, time_limit=LIMIT, provider=NINT, engines=engines)
    assert plan.is_feasible(), plan.violations
    assert "a" in _route_of(plan, "v2") and "b" in _route_of(plan, "v1")
    assert plan.distance_m == 20 + 24  # c rides along with either van at no extra cost


def test_second_time_window_is_used() -> None:
    stops = (Stop("s", Point(30, 0), windows=(TimeWindow(0, 10), TimeWindow(100, 120))),)
    plan = solve(line_problem(stops=stops), time_limit=LIMIT, provider=NINT)
    assert not plan.engine.startswith("pyvrp")
    assert plan.is_feasible(), plan.violations
    assert plan.routes[0].visits[0].start_s == 100


def test_impossible_mandatory_stop_is_reported_not_raised() -> None:
    stops = (Stop("ok", Point(5, 0)), Stop("x", Point(900, 0), windows=(TimeWindow(0, 10),)))
    plan = solve(line_problem(stops=stops), time_limit=LIMIT, provider=NINT)
    assert not plan.is_feasible()
    assert plan.unserved_ids() == ("x",)
    assert "time window" in plan.unserved[0].reason
    assert _route_of(plan, "v1") == ("ok",)


def _two_van_day() -> RoutingProblem:
    stops = tuple(Stop(f"e{x}", Point(float(x), 0.0)) for x in (10, 20, 30)) + tuple(
        Stop(f"w{x}", Point(float(-x), 0.0)) for x in (10, 20, 30)
    )
    return line_problem(
        vehicles=(van("v1", capacity_parcels=4), van("v2", capacity_parcels=4)), stops=stops
    )


def test_reoptimisation_keeps_started_routes_with_their_vans() -> None:
    problem = _two_van_day()
    first = solve(problem, time_limit=LIMIT, provider=NINT)
    assert first.is_feasible() and first.distance_m == 120
    moving = first.routes[0]
    done = moving.stop_ids[:1]
    where = problem.stop(done[0]).location
    urgent = Stop("urgent", Point(0.0, 5.0))
    day = RoutingProblem(
        depots=problem.depots, vehicles=problem.vehicles, stops=problem.stops + (urgent,)
    )
    progress = [StartedRoute(moving.vehicle_id, where, moving.visits[0].departure_s, done=done)]
    again = reoptimise(day, first, progress, time_limit=LIMIT, provider=NINT)
    assert again.is_feasible(), again.violations
    assert set(_route_of(again, moving.vehicle_id)) == set(moving.stop_ids[1:])
    assert done[0] not in again.unserved_ids()
    other = "v2" if moving.vehicle_id == "v1" else "v1"
    assert "urgent" in _route_of(again, other)  # the van on the road cannot load it


def test_warm_start_is_never_worse_than_the_start() -> None:
    problem = _two_van_day()
    bad = solve(problem, time_limit=0.3, provider=NINT, engines=("ortools",), workers=1)
    plan = solve(problem, time_limit=LIMIT, provider=NINT, engines=("ortools",), initial=bad)
    assert plan.is_feasible() and plan.cost <= bad.cost


def test_geographic_day_with_default_matrix() -> None:
    depot = Location(51.5074, -0.1278)
    stops = tuple(
        Stop(
            f"s{i}",
            Location(51.50 + 0.004 * i, -0.12 - 0.003 * (i % 4)),
            windows=(TimeWindow(9 * 3600, 13 * 3600),),
            service_s=180,
            controlled_drug=i == 3,
        )
        for i in range(8)
    )
    vehicles = (
        van("v1", shift=TimeWindow(8 * 3600, 17 * 3600), cost_per_km=30, cost_per_hour=1500),
    )
    problem = RoutingProblem(depots=(Depot("d", depot),), vehicles=vehicles, stops=stops)
    plan = solve(problem, time_limit=LIMIT)
    assert plan.is_feasible(), plan.violations
    assert len(plan.routes[0].visits) == 8
    assert plan.routes[0].visits[0].start_s >= 9 * 3600


def test_solomon_c101_reaches_its_proven_optimum() -> None:
    instance = load_instance(DATA / "solomon" / "C101.txt")
    plan = solve(instance.problem, time_limit=3, provider=instance.provider)
    assert plan.is_feasible(), plan.violations[:3]
    assert plan.distance_m / plan.scale <= 827.3 * 1.005  # proven optimum 827.3


def test_or_tools_alone_is_feasible_on_solomon() -> None:
    instance = load_instance(DATA / "solomon" / "R101.txt")
    plan = solve(instance.problem, time_limit=2, provider=instance.provider, engines=("ortools",))
    assert plan.is_feasible(), plan.violations[:3]
    assert 1637.7 <= plan.distance_m / plan.scale <= 1637.7 * 1.08


def test_cvrp_x_instance_within_a_few_percent() -> None:
    instance = load_instance(DATA / "cvrp_x" / "X-n101-k25.vrp")
    plan = solve(instance.problem, time_limit=2, provider=instance.provider)
    assert plan.is_feasible(), plan.violations[:3]
    assert 27591 <= plan.distance_m <= 27591 * 1.04


def test_time_limit_is_respected() -> None:
    import time

    instance = load_instance(DATA / "solomon" / "RC201.txt")
    started = time.monotonic()
    solve(instance.problem, time_limit=1.0, provider=instance.provider)
    assert time.monotonic() - started <= 1.15


@pytest.mark.parametrize("engines", [None, ("pyvrp-soft",)])
def test_over_full_plain_day_still_gets_a_plan(engines: tuple[str, ...] | None) -> None:
    problem = line_problem(vehicles=(van("v1", capacity_parcels=3),))
    plan = solve(problem, time_limit=LIMIT, provider=NINT, engines=engines)
    assert len(plan.unserved) == 1 and len(plan.routes[0].visits) == 3
    assert not plan.is_feasible()  # a mandatory stop is left out, and the plan says so
    assert "capacity" in plan.unserved[0].reason


def _random_constrained_problem(seed: int) -> RoutingProblem:
    import random

    rng = random.Random(seed)
    vehicles = []
    for k in range(rng.randint(1, 3)):
        rest = None
        if rng.random() < 0.7:
            window = TimeWindow(rng.randint(100, 300), rng.randint(300, 500))
            rest = Break(window, rng.randint(10, 60))
        vehicles.append(
            van(
                f"v{k}",
                capacity_parcels=rng.randint(3, 8),
                fridge=rng.random() < 0.5,
                rest_break=rest,
            )
        )
    stops = []
    for i in range(rng.randint(3, 12)):
        windows = []
        start = rng.randint(0, 300)
        for _ in range(rng.randint(0, 2)):
            end = start + rng.randint(20, 200)
            windows.append(TimeWindow(start, end))
            start = end + rng.randint(10, 200)
        stops.append(
            Stop(
                f"s{i}",
                Point(rng.randint(-100, 100), rng.randint(-100, 100)),
                windows=tuple(windows),
                service_s=rng.randint(0, 30),
                parcels=rng.randint(1, 2),
                needs_fridge=rng.random() < 0.2,
                drop_penalty=rng.choice([None, 50, 500]),
                pinned_vehicle=rng.choice([None] * 4 + [v.id for v in vehicles]),
            )
        )
    return line_problem(vehicles=tuple(vehicles), stops=tuple(stops))


@pytest.mark.parametrize("seed", range(6))
def test_or_tools_routes_pass_the_independent_checker(seed: int) -> None:
    """OR-Tools' model (breaks, windows, pins, fridge) agrees with the checker's rules."""
    problem = _random_constrained_problem(seed)
    plan = solve(problem, time_limit=0.4, provider=NINT, engines=("ortools",), workers=1)
    route_violations = [v for v in plan.violations if not v.startswith("mandatory stop")]
    assert route_violations == []


def test_several_fridge_stops_on_the_pyvrp_path() -> None:
    stops = (
        Stop("cold1", Point(10, 0), needs_fridge=True),
        Stop("cold2", Point(12, 0), needs_fridge=True),
        Stop("warm", Point(-10, 0)),
    )
    problem = line_problem(vehicles=(van("v1"), van("cool", fridge=True)), stops=stops)
    plan = solve(problem, time_limit=LIMIT, provider=NINT, engines=("pyvrp",), workers=1)
    assert plan.engine == "pyvrp" and plan.is_feasible(), plan.violations
    assert set(_route_of(plan, "cool")) >= {"cold1", "cold2"}
    assert plan.distance_m == 44  # one van: 0 -> 12 -> 10 -> -10 -> 0 (12 + 2 + 20 + 10)
