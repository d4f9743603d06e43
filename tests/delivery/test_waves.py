"""Waves planned through a real RQ worker on real Redis, and the faults it must survive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from redis import Redis
from rq.job import Job
from sqlalchemy import func, select

from pharmacy.models import (
    AuditEvent,
    DeliveryRoute,
    DeliveryStop,
    DeliveryWave,
    Order,
    OutboxMessage,
    StopStatus,
    Vehicle,
    WaveStatus,
)
from pharmacy.services import delivery, outbox
from tests.delivery.conftest import LONDON, make_wave_orders

ROOT = Path(__file__).resolve().parents[2]


def _env(database_url: str, redis_url: str, seconds: int) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
            "DISPENSARY_ENV": "testing", "ROUTING_TIME_LIMIT_S": str(seconds)}


def _burst(database_url: str, redis_url: str, seconds: int = 10) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([sys.executable, "-m", "pharmacy.worker", "--burst", "routing",
                           "default"], cwd=ROOT, env=_env(database_url, redis_url, seconds),
                          capture_output=True, text=True, timeout=300)


def _close_and_relay(db, redis: Redis, slot) -> DeliveryWave:  # type: ignore[no-untyped-def]
    wave = delivery.close_wave(db.session, slot)
    db.session.commit()
    assert outbox.relay(db.session, redis) >= 1
    db.session.commit()
    return wave


def test_a_wave_of_over_100_stops_is_planned_by_a_real_worker(
        app: Flask, db, redis, database_url: str, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    slot = make_wave_orders(db, 110)
    wave = _close_and_relay(db, redis, slot)
    done = _burst(database_url, redis_url, seconds=15)
    assert done.returncode == 0, done.stderr[-2000:]
    db.session.expire_all()
    wave = db.session.get(DeliveryWave, wave.id)
    assert wave.status is WaveStatus.PLANNED, done.stdout[-3000:]
    stops = db.session.scalars(select(DeliveryStop).where(DeliveryStop.wave_id == wave.id)).all()
    assert len(stops) == 110
    assert all(s.route_id is not None for s in stops), [s.unserved_reason for s in stops
                                                        if s.route_id is None][:3]
    assert len({s.id for s in stops}) == len(stops)  # each stop once, on exactly one route
    routes = {r.id: r for r in db.session.scalars(select(DeliveryRoute).where(
        DeliveryRoute.wave_id == wave.id))}
    for route in routes.values():
        van = db.session.get(Vehicle, route.vehicle_id)
        on_route = [s for s in stops if s.route_id == route.id]
        assert len(on_route) <= van.capacity_parcels
        assert sorted(s.sequence for s in on_route) == list(range(1, len(on_route) + 1))
        assert route.courier_id is not None
        for stop in on_route:
            order = db.session.get(Order, stop.order_id)
            if order.needs_fridge:
                assert van.has_fridge, "a fridge parcel went on a van without a fridge"
            assert wave.window_start <= stop.planned_arrival <= wave.window_end
    message = db.session.scalar(select(OutboxMessage).where(
        OutboxMessage.key.like("plan-wave:%")))
    assert message.completed_at is not None


def test_worker_killed_mid_planning_then_a_fresh_worker_plans_it_exactly_once(
        app: Flask, db, redis, database_url: str, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    slot = make_wave_orders(db, 30)
    wave = _close_and_relay(db, redis, slot)
    message = db.session.scalar(select(OutboxMessage).where(
        OutboxMessage.key.like("plan-wave:%")))
    worker = subprocess.Popen([sys.executable, "-m", "pharmacy.worker", "routing"], cwd=ROOT,
                              env=_env(database_url, redis_url, 60), start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = Job.fetch(outbox.job_id(message), connection=redis)
            if job.get_status(refresh=True) == "started":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the planning job never started")
        time.sleep(2)  # well inside the 60 s solve
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its work-horse, mid-job
        worker.wait(10)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
    db.session.expire_all()
    assert db.session.get(DeliveryWave, wave.id).status is WaveStatus.PLANNING

    assert outbox.reconcile(db.session, redis, stale_after=timedelta(0)) == 1
    assert outbox.relay(db.session, redis) == 1
    db.session.commit()
    done = _burst(database_url, redis_url, seconds=5)
    assert done.returncode == 0, done.stderr[-2000:]
    db.session.expire_all()
    wave = db.session.get(DeliveryWave, wave.id)
    assert wave.status is WaveStatus.PLANNED and wave.plan_version == 1
    assert db.session.scalar(select(func.count(AuditEvent.id)).where(
        AuditEvent.action == "delivery.wave_planned")) == 1
    assert db.session.scalar(select(func.count(DeliveryStop.id)).where(
        DeliveryStop.route_id.is_not(None))) == 30
    # A late duplicate run of the same message changes nothing.
    from pharmacy.jobs.deliveries import plan_wave

    wave_id = wave.id
    assert plan_wave(wave_id, 0) is None
    assert db.session.get(DeliveryWave, wave_id).plan_version == 1


def test_a_job_written_while_redis_is_down_runs_when_it_returns(
        app: Flask, db, database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import socket

    from config import config_for_tests
    from pharmacy import create_app
    from pharmacy.models import Notification, OrderStatus, Role
    from pharmacy.services import orders
    from tests.factories import UserFactory

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"

    def start_redis() -> subprocess.Popen:  # type: ignore[type-arg]
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            try:
                if Redis.from_url(url).ping():
                    return proc
            except Exception:
                time.sleep(0.1)
        raise AssertionError("redis-server did not start")

    server = start_redis()
    private = create_app(config_for_tests(database_url, url))
    try:
        make_wave_orders(db, 1)
        order_id = db.session.scalar(select(Order.id))
        pharmacist_id = UserFactory(role=Role.PHARMACIST).id
        order = db.session.get(Order, order_id)
        order.status = OrderStatus.READY_TO_PICK
        for line in order.lines:
            line.quantity_supplied = None
        # Reserved as checkout would, so packing has units to pick.
        orders._reserve(db.session, order, slot_day=order.delivery_window_start, actor=None)
        db.session.commit()
        server.terminate()
        server.wait(10)  # Redis goes away just before the order is packed

        with private.app_context():
            from pharmacy.extensions import db as private_db
            from pharmacy.jobs.outbox import relay_now
            from pharmacy.models import User

            packed = private_db.session.get(Order, order_id)
            orders.pack(private_db.session, packed,
                        actor=private_db.session.get(User, pharmacist_id))
            private_db.session.commit()
            relay_now()  # fails quietly: the message waits in the outbox
            message = private_db.session.scalar(select(OutboxMessage).where(
                OutboxMessage.key == f"order-packed:{order_id}"))
            assert message.enqueued_at is None and message.last_error
            private_db.session.remove()

        server = start_redis()
        done = subprocess.run([sys.executable, "-m", "pharmacy.worker", "--burst", "default"],
                              cwd=ROOT, env=_env(database_url, url, 5), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        db.session.expire_all()
        message = db.session.scalar(select(OutboxMessage).where(
            OutboxMessage.key == f"order-packed:{order_id}"))
        assert message.completed_at is not None
        assert db.session.scalar(select(Notification).where(
            Notification.kind == "order.packed")) is not None
    finally:
        server.terminate()
        server.wait(10)
        with private.app_context():
            from pharmacy.extensions import db as private_db

            private_db.engine.dispose()


def test_unserved_stops_get_a_reason(db, fast_routing) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.jobs.deliveries import plan_wave
    from pharmacy.models import Courier, User

    slot = make_wave_orders(db, 12, fridge_every=3)
    for courier in db.session.scalars(select(Courier)).all():
        van = db.session.get(Vehicle, courier.default_vehicle_id)
        if van.has_fridge:
            db.session.get(User, courier.user_id).is_active = False  # no fridge van today
    db.session.commit()
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    assert plan_wave(wave_id, 0) == wave_id  # the job releases the session while solving
    unserved = db.session.scalars(select(DeliveryStop).where(
        DeliveryStop.status == StopStatus.UNSERVED)).all()
    assert len(unserved) == 4 and all(s.unserved_reason for s in unserved)


@pytest.mark.parametrize(("day", "hour"), [(date(2027, 3, 28), 12), (date(2027, 10, 31), 18)],
                         ids=["clocks-forward", "clocks-back"])
def test_a_wave_on_a_clock_change_day_keeps_shifts_windows_and_etas_in_local_time(  # type: ignore[no-untyped-def]
        db, fast_routing, day, hour) -> None:
    """On the two days the clocks change, the window is still two hours from ``hour`` on
    the pharmacy's clock: the demo's 12:00-20:00 couriers are on shift for the 12:00 and
    the 18:00 windows, and every ETA falls inside the window (times for the solver are
    elapsed seconds, shifts included)."""
    from pharmacy.jobs.deliveries import plan_wave

    slot = make_wave_orders(db, 6, fridge_every=0, day=day, hour=hour)
    starts_at, ends_at = slot.starts_at, slot.ends_at
    assert starts_at.astimezone(LONDON).hour == hour
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    problem, _ = delivery.build_problem(db.session, wave_id)
    window = problem.stops[0].windows[0]
    assert window.end_s - window.start_s == 2 * 3600
    # Rush-hour speeds read the wall clock: the window opens at `hour` o'clock there.
    assert window.start_s + problem.clock_offset_s == hour * 3600
    assert problem.clock_offset_s == (3600 if day.month == 3 else -3600)
    late = [v.shift for v in problem.vehicles if v.shift.end_s - v.shift.start_s == 8 * 3600
            and window.start_s in (v.shift.start_s, v.shift.end_s - 2 * 3600)]
    assert late, [v.shift for v in problem.vehicles]  # the 12:00-20:00 couriers
    db.session.rollback()
    assert plan_wave(wave_id, 0) == wave_id
    stops = db.session.scalars(select(DeliveryStop)).all()
    assert len(stops) == 6 and all(s.status is StopStatus.PENDING for s in stops)
    for stop in stops:
        assert starts_at <= stop.planned_arrival <= ends_at, stop.planned_arrival
