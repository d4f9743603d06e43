"""The independent checker on hand-made routes (no solver involved)."""

from __future__ import annotations

from routing import (
    Break,
    Depot,
    Point,
    RoutingProblem,
    Stop,
    TimeWindow,
    check_feasibility,
    evaluate,
)
from routing.matrix import build_matrix
from tests.routing.helpers import NINT, line_problem, van


def _plan(problem: RoutingProblem, routes: list[tuple[str, list[str]]]):  # type: ignore[no-untyped-def]
    _, matrix = build_matrix(problem, NINT)
    return evaluate(problem, matrix, routes), matrix


def test_a_correct_plan_is_feasible_with_exact_distance() -> None:
    plan, matrix = _plan(line_problem(), [("v1", ["s10", "s20", "s-10", "s-20"])])
    # 0 -> 10 -> 20 -> -10 -> -20 -> 0 = 10 + 10 + 30 + 10 + 20
    assert plan.distance_m == 80
    assert plan.is_feasible(), plan.violations
    assert check_feasibility(line_problem(), plan, matrix=matrix) == []
    visits = plan.routes[0].visits
    assert [v.arrival_s for v in visits] == [10, 20, 50, 60]


def test_capacity_and_duplicates_are_caught() -> None:
    problem = line_problem(vehicles=(van("v1", capacity_parcels=2),))
    plan, _ = _plan(problem, [("v1", ["s10", "s20", "s10"])])
    text = " | ".join(plan.violations)
    assert "capacity" in text and "visited twice" in text
    assert "mandatory stop s-10 not served" in text


def test_windows_are_checked_and_waiting_is_allowed() -> None:
    stops = (
        Stop("early", Point(10, 0), windows=(TimeWindow(50, 60),)),
        Stop("late", Point(20, 0), windows=(TimeWindow(0, 55),)),
    )
    problem = line_problem(stops=stops)
    plan, _ = _plan(problem, [("v1", ["early", "late"])])
    # Arrive at 10, wait until 50, leave 50, reach "late" at 60 > 55.
    assert plan.routes[0].visits[0].start_s == 50
    assert any("late" in v and "after its last window" in v for v in plan.violations)
    ok, _ = _plan(problem, [("v1", ["late", "early"])])
    assert ok.is_feasible(), ok.violations


def test_second_window_is_used_when_first_is_missed() -> None:
    stop = Stop("s", Point(30, 0), windows=(TimeWindow(0, 10), TimeWindow(100, 120)))
    plan, _ = _plan(line_problem(stops=(stop,)), [("v1", ["s"])])
    assert plan.is_feasible()
    assert plan.routes[0].visits[0].start_s == 100


def test_fridge_stop_on_normal_van_is_a_violation() -> None:
    cold = Stop("cold", Point(10, 0), needs_fridge=True)
    problem = line_problem(vehicles=(van("v1"), van("cool", fridge=True)), stops=(cold,))
    assert not _plan(problem, [("v1", ["cold"])])[0].is_feasible()
    assert _plan(problem, [("cool", ["cold"])])[0].is_feasible()


def test_break_is_placed_inside_its_window() -> None:
    rest = Break(TimeWindow(15, 40), 30)
    problem = line_problem(vehicles=(van("v1", rest_break=rest),))
    plan, _ = _plan(problem, [("v1", ["s10", "s20", "s-10", "s-20"])])
    assert plan.is_feasible(), plan.violations
    route = plan.routes[0]
    assert route.break_start_s is not None and 15 <= route.break_start_s <= 40
    assert route.end_s == 80 + 30  # the break adds its duration
    short = line_problem(vehicles=(van("v1", rest_break=rest, shift=TimeWindow(0, 100)),))
    assert not _plan(short, [("v1", ["s10", "s20", "s-10", "s-20"])])[0].is_feasible()


def test_shift_end_is_enforced() -> None:
    problem = line_problem(vehicles=(van("v1", shift=TimeWindow(0, 79)),))
    plan, _ = _plan(problem, [("v1", ["s10", "s20", "s-10", "s-20"])])
    assert any("after shift end" in v for v in plan.violations)


def test_dropped_optional_stop_costs_its_penalty_with_priority() -> None:
    stops = (
        Stop("near", Point(1, 0)),
        Stop("far", Point(500, 0), drop_penalty=7, priority=2),
    )
    plan, _ = _plan(line_problem(stops=stops), [("v1", ["near"])])
    assert plan.is_feasible()
    assert plan.unserved_ids() == ("far",)
    assert plan.cost == 2 / 1000 + 7 * 3
    assert "penalty" in plan.unserved[0].reason


def test_unknown_vehicle_and_tampered_distance() -> None:
    problem = line_problem()
    plan, matrix = _plan(problem, [("ghost", ["s10"])])
    assert any("unknown vehicle" in v for v in plan.violations)
    good, _ = _plan(problem, [("v1", ["s10", "s20", "s-10", "s-20"])])
    import dataclasses

    forged = dataclasses.replace(good, routes=(dataclasses.replace(good.routes[0], distance_m=1),))
    assert any("reported distance" in v for v in check_feasibility(problem, forged, matrix=matrix))


def test_unreachable_stop_gets_a_reason() -> None:
    stop = Stop("x", Point(900, 0), windows=(TimeWindow(0, 10),))
    problem = RoutingProblem(
        depots=(Depot("d", Point(0, 0)),), vehicles=(van("v1"),), stops=(stop,)
    )
    plan, _ = _plan(problem, [])
    assert not plan.is_feasible()
    assert "time window" in plan.unserved[0].reason
