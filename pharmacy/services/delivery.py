"""Deliveries: waves, the ORM <-> ``routing`` translation, plans, couriers' actions, ETAs.

This is the only module that builds ``routing`` problems from rows and stores plans back.
Routing times are seconds elapsed since local midnight of the wave's day (real seconds: the days
the clocks change have 23 or 25 hours).
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..errors import Conflict, DomainError, Forbidden, InvalidRequest, NotFound
from ..models import (
    Address,
    AttemptOutcome,
    Courier,
    DeliveryAttempt,
    DeliveryRoute,
    DeliverySlot,
    DeliveryStop,
    DeliveryWave,
    Order,
    OrderStatus,
    PatientProfile,
    Pharmacy,
    Role,
    StopStatus,
    User,
    Vehicle,
    WaveStatus,
)
from ..models.base import utcnow
from . import audit, orders, outbox
from .photos import PhotoStore

logger = logging.getLogger(__name__)

SERVICE_S = 120                 # a doorstep hand-over
FAILURE_REASONS = {"not_home": "Nobody at home", "wrong_address": "Wrong address",
                   "refused": "Refused by the recipient", "unsafe": "Unsafe to deliver"}
#: The courier's "not handed over" for a parcel the pharmacy recalled (`orders.recall`).
RECALLED = "recalled"
RECALLED_WORDS = "Recalled by the pharmacy: brought back"
MAX_SIGNATURE_BYTES = 200_000
PLAN_JOB = "pharmacy.jobs.deliveries.plan_wave"


def needs_id_check(order: Order) -> bool:
    """A parcel with a Schedule 2/3 controlled drug: the courier checks the recipient's ID."""
    from .prescriptions import SECOND_CHECK_SCHEDULES

    return any(line.medicine.cd_schedule in SECOND_CHECK_SCHEDULES for line in order.lines)


def _tz(pharmacy: Pharmacy) -> ZoneInfo:
    return ZoneInfo(pharmacy.timezone)


def _seconds(moment: datetime, midnight: datetime) -> int:
    return max(0, int((moment - midnight).total_seconds()))


# --- waves ---------------------------------------------------------------------------------

def close_wave(session: Session, slot: DeliverySlot, *, actor: User | None = None,
               now: datetime | None = None) -> DeliveryWave:
    """At the slot's cut-off: gather its packed orders into a wave and queue its planning.

    Idempotent: a wave is created once per slot; orders packed later join the next plan.
    """
    now = now or utcnow()
    wave = session.scalar(select(DeliveryWave).where(
        DeliveryWave.pharmacy_id == slot.pharmacy_id,
        DeliveryWave.window_start == slot.starts_at).with_for_update())
    if wave is None:
        wave = DeliveryWave(pharmacy_id=slot.pharmacy_id, window_start=slot.starts_at,
                            window_end=slot.ends_at, cutoff_at=slot.cutoff_at)
        session.add(wave)
        session.flush()
    if wave.status not in (WaveStatus.OPEN, WaveStatus.PLANNED):
        return wave
    existing = set(session.scalars(select(DeliveryStop.order_id).where(
        DeliveryStop.wave_id == wave.id)))
    packed = session.scalars(select(Order).where(
        Order.pharmacy_id == slot.pharmacy_id, Order.delivery_slot_id == slot.id,
        Order.status == OrderStatus.PACKED).order_by(Order.id)).all()
    new = [o for o in packed if o.id not in existing]
    for order in new:
        session.add(DeliveryStop(wave_id=wave.id, order_id=order.id))
    if not new and wave.status is WaveStatus.PLANNED:
        return wave
    return request_planning(session, wave, actor=actor, now=now)


def request_planning(session: Session, wave: DeliveryWave, *, actor: User | None,
                     now: datetime | None = None) -> DeliveryWave:
    """Mark the wave for (re)planning and write the planning job to the outbox."""
    before = wave.status
    wave.status = WaveStatus.PLANNING
    wave.planning_started_at = now or utcnow()
    session.flush()
    outbox.add(session, key=f"plan-wave:{wave.id}:v{wave.plan_version}", function=PLAN_JOB,
               args=[wave.id, wave.plan_version], queue="routing", job_timeout_s=600)
    audit.record(session, action="delivery.wave_planning", entity_type="delivery_wave",
                 entity_id=wave.id, actor=actor, before={"status": before.value},
                 after={"status": wave.status.value, "plan_version": wave.plan_version})
    return wave


@dataclass(frozen=True)
class ProblemIndex:
    """How routing ids map back to rows, and the wave's local midnight."""

    wave_id: int
    plan_version: int
    midnight: datetime
    vehicle_courier: dict[str, int | None]
    # Stops left out of the problem, with why (an address with no map position).
    left_out: tuple[tuple[int, str], ...] = ()


UNLOCATED = "the delivery address could not be located on the map; check it with the patient"


def build_problem(session: Session, wave_id: int) -> tuple[Any, ProblemIndex]:
    """The wave as a ``routing.RoutingProblem`` (plain dataclasses; no ORM objects leak)."""
    import routing

    wave = session.get(DeliveryWave, wave_id)
    if wave is None:
        raise NotFound(f"No wave {wave_id}.")
    pharmacy = session.get(Pharmacy, wave.pharmacy_id)
    assert pharmacy is not None
    tz = _tz(pharmacy)
    local_start = wave.window_start.astimezone(tz)
    # Held in UTC so that every difference from it (and every ETA added to it) is elapsed
    # time: Python subtracts two datetimes of the same zone by their clock faces, which on
    # the days the clocks change put shifts an hour away from windows and ETAs.
    midnight = datetime.combine(local_start.date(), time(), tzinfo=tz).astimezone(UTC)
    window = routing.TimeWindow(_seconds(wave.window_start, midnight),
                                _seconds(wave.window_end, midnight))
    depot = routing.Depot(id=f"depot-{pharmacy.id}",
                          location=routing.Location(pharmacy.latitude, pharmacy.longitude))
    vehicles, couriers = [], {}
    rows = session.execute(
        select(Courier, Vehicle).join(User, User.id == Courier.user_id)
        .join(Vehicle, Vehicle.id == Courier.default_vehicle_id)
        .where(Courier.pharmacy_id == pharmacy.id, User.is_active.is_(True),
               Vehicle.is_active.is_(True)).order_by(Vehicle.id)).all()
    for courier, van in rows:
        shift = routing.TimeWindow(
            _seconds(datetime.combine(local_start.date(), courier.shift_start, tzinfo=tz),
                     midnight),
            _seconds(datetime.combine(local_start.date(), courier.shift_end, tzinfo=tz),
                     midnight))
        if shift.start_s > window.start_s or shift.end_s < window.end_s:
            continue  # not on shift for this window
        vehicles.append(routing.Vehicle(
            id=str(van.id), depot_id=depot.id, shift=shift, capacity_parcels=van.capacity_parcels,
            fridge=van.has_fridge, cost_per_km=max(1, van.cost_per_km_minor),
            cost_per_hour=van.cost_per_hour_minor))
        couriers[str(van.id)] = courier.id
    if not vehicles:
        raise Conflict("No courier with a van is on shift for this window.")
    stops = []
    left_out: list[tuple[int, str]] = []
    for stop in session.scalars(select(DeliveryStop).where(
            DeliveryStop.wave_id == wave.id,
            DeliveryStop.status.in_([StopStatus.PENDING, StopStatus.ARRIVED,
                                     StopStatus.UNSERVED]))
            .order_by(DeliveryStop.id)):
        order = session.get(Order, stop.order_id)
        assert order is not None
        address = session.get(Address, order.address_id) if order.address_id else None
        if not address or address.latitude is None or address.longitude is None:
            # Cannot be routed; the stored plan says so (the patient is offered another
            # slot, the planner page shows why) instead of leaving it pending for good.
            left_out.append((stop.id, UNLOCATED))
            continue
        controlled = needs_id_check(order)
        stops.append(routing.Stop(
            id=str(stop.id), location=routing.Location(address.latitude, address.longitude),
            windows=(window,), service_s=SERVICE_S, parcels=max(1, order.parcel_count),
            needs_fridge=order.needs_fridge, controlled_drug=controlled,
            drop_penalty=None))  # mandatory: the planner says why if one cannot be served
    started = []
    now_s = _seconds(utcnow(), midnight)
    for route in session.scalars(select(DeliveryRoute).where(
            DeliveryRoute.wave_id == wave.id, DeliveryRoute.started_at.is_not(None))):
        if str(route.vehicle_id) not in couriers:
            continue
        done = [s for s in route.stops if s.status in (StopStatus.DELIVERED, StopStatus.FAILED)]
        position: Any = depot.location
        if done:
            last = max(done, key=lambda s: s.completed_at or wave.window_start)
            order = session.get(Order, last.order_id)
            address = session.get(Address, order.address_id) if order and order.address_id \
                else None
            if address is not None and address.latitude is not None \
                    and address.longitude is not None:
                position = routing.Location(address.latitude, address.longitude)
        loaded = {str(s.id) for s in route.stops
                  if s.status in (StopStatus.PENDING, StopStatus.ARRIVED)}
        on_board = tuple(s.id for s in stops if s.id in loaded)
        started.append(routing.StartedRoute(vehicle_id=str(route.vehicle_id), position=position,
                                            time_s=max(now_s, window.start_s), done=(),
                                            on_board=on_board))
    # Rush-hour speeds go by the clock on the wall, which on the days the clocks change
    # is an hour away from the elapsed seconds the problem counts in.
    clock = local_start.hour * 3600 + local_start.minute * 60 + local_start.second
    problem = routing.RoutingProblem(depots=(depot,), vehicles=tuple(vehicles),
                                     stops=tuple(stops), started=tuple(started),
                                     name=f"wave-{wave.id}",
                                     clock_offset_s=clock - window.start_s)
    return problem, ProblemIndex(wave.id, wave.plan_version, midnight, couriers,
                                 tuple(left_out))


def store_plan(session: Session, index: ProblemIndex, plan: Any) -> bool:
    """Write the plan, unless the wave moved on meanwhile (then nothing is written).

    Returns:
        True when this plan was stored; False for a stale or duplicate run.
    """
    wave = session.scalar(select(DeliveryWave).where(DeliveryWave.id == index.wave_id)
                          .with_for_update())
    if (wave is None or wave.status is not WaveStatus.PLANNING
            or wave.plan_version != index.plan_version):
        return False
    # Stops that cannot be served are reported (and offered another slot); any other
    # violation (capacity, windows, shifts) means the plan must not be driven.
    unserved_ids = set(plan.unserved_ids())
    broken = [v for v in plan.violations
              if not any(f"stop {sid} not served" in v for sid in unserved_ids)]
    if broken:
        raise Conflict(f"The planner returned an infeasible plan: {broken[:3]}")
    session.execute(update(DeliveryStop).where(
        DeliveryStop.wave_id == wave.id, DeliveryStop.status.in_(
            [StopStatus.PENDING, StopStatus.ARRIVED, StopStatus.UNSERVED]))
        .values(route_id=None, sequence=None).execution_options(synchronize_session=False))
    old_routes = session.scalars(select(DeliveryRoute).where(
        DeliveryRoute.wave_id == wave.id, DeliveryRoute.started_at.is_(None))).all()
    for old in old_routes:
        if not session.scalar(select(DeliveryStop.id).where(DeliveryStop.route_id == old.id)):
            session.delete(old)
    session.flush()
    for planned in plan.routes:
        if not planned.visits:
            continue
        # A van already on the road keeps its route (and the stops it has done).
        route = session.scalar(select(DeliveryRoute).where(
            DeliveryRoute.wave_id == wave.id,
            DeliveryRoute.vehicle_id == int(planned.vehicle_id)))
        if route is None:
            route = DeliveryRoute(wave_id=wave.id, vehicle_id=int(planned.vehicle_id),
                                  courier_id=index.vehicle_courier.get(planned.vehicle_id))
            session.add(route)
        route.planned_distance_m = planned.distance_m
        route.planned_duration_s = planned.duration_s
        session.flush()
        first = 1 + max((s.sequence or 0 for s in route.stops if s.status in (
            StopStatus.DELIVERED, StopStatus.FAILED)), default=0)
        for sequence, visit in enumerate(planned.visits, start=first):
            stop = session.get(DeliveryStop, int(visit.stop_id))
            assert stop is not None
            # Service start: a van that arrives early waits for the window to open.
            arrival = index.midnight + timedelta(seconds=visit.start_s)
            stop.route_id, stop.sequence = route.id, sequence
            stop.planned_arrival = stop.eta = arrival.astimezone(ZoneInfo("UTC"))
            if stop.status is StopStatus.UNSERVED:
                stop.status = StopStatus.PENDING
            stop.unserved_reason = None
    reasons = [(int(u.stop_id), u.reason) for u in plan.unserved] + list(index.left_out)
    for stop_id, reason in reasons:
        stop = session.get(DeliveryStop, stop_id)
        if stop is not None:
            stop.status, stop.unserved_reason = StopStatus.UNSERVED, reason
            _offer_new_slot(session, stop)
    dispatched = session.scalar(select(DeliveryRoute.id).where(
        DeliveryRoute.wave_id == wave.id, DeliveryRoute.started_at.is_not(None)).limit(1))
    wave.status = WaveStatus.DISPATCHED if dispatched else WaveStatus.PLANNED
    wave.planned_at = utcnow()
    wave.plan_version += 1
    wave.planned_distance_m = plan.distance_m
    wave.planning_engine = (plan.engine or "")[:40]
    audit.record(session, action="delivery.wave_planned", entity_type="delivery_wave",
                 entity_id=wave.id, after={"routes": len(plan.routes),
                                           "unserved": len(plan.unserved),
                                           "distance_m": plan.distance_m,
                                           "plan_version": wave.plan_version})
    session.flush()
    return True


def planning_failed(session: Session, wave_id: int, plan_version: int, reason: str) -> bool:
    """No plan could be made (no courier on shift, an infeasible plan): the wave must not
    stay 'planning' for good. It goes back to open (or to its last plan), so the cut-off
    sweep tries again, and its parcels not on a van are offered other slots meanwhile.
    Returns False when the wave moved on and nothing was changed."""
    wave = session.scalar(select(DeliveryWave).where(DeliveryWave.id == wave_id)
                          .with_for_update())
    if wave is None or wave.status is not WaveStatus.PLANNING or (
            wave.plan_version != plan_version):
        return False
    wave.status = WaveStatus.PLANNED if wave.planned_at is not None else WaveStatus.OPEN
    for stop in session.scalars(select(DeliveryStop).where(
            DeliveryStop.wave_id == wave.id, DeliveryStop.route_id.is_(None),
            DeliveryStop.status.in_([StopStatus.PENDING, StopStatus.UNSERVED]))):
        stop.status = StopStatus.UNSERVED
        stop.unserved_reason = f"no delivery plan could be made: {reason}"[:500]
        _offer_new_slot(session, stop)
    audit.record(session, action="delivery.planning_failed", entity_type="delivery_wave",
                 entity_id=wave.id, reason=reason,
                 before={"status": WaveStatus.PLANNING.value},
                 after={"status": wave.status.value})
    session.flush()
    return True


def _offer_new_slot(session: Session, stop: DeliveryStop) -> None:
    from . import notify

    order = session.get(Order, stop.order_id)
    if order is None:
        return
    patient = session.get(PatientProfile, order.patient_id)
    if patient is None:
        return
    notify_kind = "delivery.rebook"
    try:
        notify.create_notification(session, kind=notify_kind, patient=patient,
                                   dedupe_key=f"rebook:{stop.id}",
                                   given_name=patient.given_name, reference=order.reference)
    except Exception:  # a missing template must not lose the plan
        logger.exception("could not write the rebooking notice for stop %s", stop.id)


# --- the courier's day -------------------------------------------------------------------------

def courier_of(session: Session, user: User) -> Courier:
    courier = user.courier
    if courier is None:
        raise Forbidden("This account is not a courier.")
    return courier


def routes_for(session: Session, courier: Courier, *, day: date) -> list[DeliveryRoute]:
    start = datetime.combine(day, time(), tzinfo=ZoneInfo("Europe/London"))
    return list(session.scalars(
        select(DeliveryRoute).join(DeliveryWave).where(
            DeliveryRoute.courier_id == courier.id,
            DeliveryWave.window_start >= start,
            DeliveryWave.window_start < start + timedelta(days=1))
        .order_by(DeliveryWave.window_start, DeliveryRoute.id)))


def stop_for_courier(session: Session, courier: Courier, stop_id: int, *,
                     lock: bool = False) -> DeliveryStop:
    """A stop of one of this courier's routes; any other stop is a 403."""
    stmt = select(DeliveryStop).where(DeliveryStop.id == stop_id)
    if lock:
        stmt = stmt.with_for_update()
    stop = session.scalar(stmt)
    if stop is None:
        raise NotFound(f"No stop {stop_id}.")
    route = session.get(DeliveryRoute, stop.route_id) if stop.route_id else None
    if route is None or route.courier_id != courier.id:
        raise Forbidden("This stop is on another courier's route.")
    return stop


def start_route(session: Session, route: DeliveryRoute, *, actor: User,
                now: datetime | None = None) -> DeliveryRoute:
    """Leaving the pharmacy: every order on the route goes out for delivery (card captured)."""
    from . import checkout

    if route.started_at is not None:
        return route
    route.started_at = now or utcnow()
    route.status = "started"
    if route.wave.status is WaveStatus.PLANNED:
        route.wave.status = WaveStatus.DISPATCHED
    held = []
    for stop in list(route.stops):
        order = session.get(Order, stop.order_id)
        if order is None or order.status is not OrderStatus.PACKED:
            continue
        # Each capture is its own step: money taken at Stripe for one parcel is never
        # undone in the database because another parcel's payment failed.
        try:
            with session.begin_nested():
                checkout.dispatch(session, order, actor=actor)
        except DomainError as err:
            route.stops.remove(stop)
            stop.status, stop.sequence = StopStatus.UNSERVED, None
            stop.unserved_reason = f"kept at the pharmacy: {err.detail}"[:500]
            held.append(order.id)
            audit.record(session, action="delivery.stop_held_back", entity_type="order",
                         entity_id=order.id, actor=actor, reason=err.detail)
    audit.record(session, action="delivery.route_started", entity_type="delivery_route",
                 entity_id=route.id, actor=actor, after={"held_back": held} if held else None)
    session.flush()
    return route


@dataclass(frozen=True)
class ActionResult:
    stop: DeliveryStop
    attempt: DeliveryAttempt | None
    replayed: bool


def _signature(data_url: str | None) -> str | None:
    if not data_url:
        return None
    prefix = "data:image/png;base64,"
    if not data_url.startswith(prefix) or len(data_url) > MAX_SIGNATURE_BYTES * 4 // 3 + 100:
        raise InvalidRequest("The signature must be a PNG drawing of reasonable size.")
    try:
        raw = base64.b64decode(data_url[len(prefix):], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("The signature could not be read.") from None
    if not raw.startswith(b"\x89PNG\r\n\x1a\n") or len(raw) > MAX_SIGNATURE_BYTES:
        raise InvalidRequest("The signature must be a PNG drawing of reasonable size.")
    return data_url


def record_action(session: Session, user: User, stop_id: int, *, action: str,
                  client_action_id: str, recipient_name: str | None = None,
                  signature_png: str | None = None, id_checked: bool = False,
                  failure_reason: str | None = None, latitude: float | None = None,
                  longitude: float | None = None, photo: bytes | None = None,
                  photo_store: PhotoStore | None = None,
                  recorded_at: datetime | None = None,
                  now: datetime | None = None) -> ActionResult:
    """A courier's action at a stop, idempotent on the phone's ``client_action_id``.

    The same action sent three times (a flaky connection) is recorded once. A delivery may
    carry a ``photo`` (proof of delivery), checked and stored by ``photo_store``.
    ``recorded_at`` is when the phone recorded the action (it queues actions while offline):
    a parcel recalled after it was handed over is recorded as delivered, and the recall
    stays open for a pharmacist to follow up with the patient.
    """
    now = now or utcnow()
    courier = courier_of(session, user)
    stop = stop_for_courier(session, courier, stop_id, lock=True)  # 403 before anything else
    if not client_action_id or len(client_action_id) > 64:
        raise InvalidRequest("Each action needs a client id (at most 64 characters).")
    previous = session.scalar(select(DeliveryAttempt).where(
        DeliveryAttempt.client_action_id == client_action_id))
    if previous is not None:
        if previous.stop_id != stop.id:
            raise Conflict("That client action id was used for another stop.")
        return ActionResult(stop, previous, True)
    if action == "arrived":
        if stop.arrived_at is None:
            stop.arrived_at = now
            stop.status = StopStatus.ARRIVED if stop.status is StopStatus.PENDING else stop.status
            audit.record(session, action="delivery.arrived", entity_type="delivery_stop",
                         entity_id=stop.id, actor=user)
        return ActionResult(stop, None, False)
    if stop.status in (StopStatus.DELIVERED, StopStatus.FAILED):
        raise Conflict(f"This stop is already {stop.status.value}.")
    route = session.get(DeliveryRoute, stop.route_id) if stop.route_id else None
    if route is None or route.started_at is None:
        # The parcel has not left (and its money is not taken): start the route first.
        raise Conflict("Start the route before recording a delivery: the parcels leave the "
                       "pharmacy, and the cards are charged, when the route starts.")
    order = session.get(Order, stop.order_id)
    assert order is not None
    if order.status in (OrderStatus.CANCELLED, OrderStatus.REFUNDED):
        raise Conflict(f"This order was {order.status.value}: do not hand it over; bring "
                       "the parcel back to the pharmacy.")
    before_recall = False
    if order.recalled_at is not None and action == "delivered":
        before_recall = (recorded_at is not None and recorded_at.tzinfo is not None
                         and route.started_at <= recorded_at < order.recalled_at)
        if not before_recall:
            raise Conflict(f"The pharmacy has recalled this parcel ({order.recall_reason}): "
                           "do not hand it over; bring it back to the pharmacy.")
    if failure_reason == RECALLED and order.recalled_at is None:
        raise InvalidRequest("This parcel has not been recalled: choose why the delivery "
                             "failed.", errors=[{"field": "failure_reason",
                                                 "message": ", ".join(FAILURE_REASONS)}])
    if photo is not None and action != "delivered":
        raise InvalidRequest("A photo goes with a delivery only.",
                             errors=[{"field": "photo", "message": "Only for 'delivered'."}])
    photo_name: str | None = None
    if action == "delivered":
        controlled = needs_id_check(order)
        name = (recipient_name or "").strip()
        errors = []
        if not name:
            errors.append({"field": "recipient_name", "message": "Who received the parcel?"})
        if controlled and not id_checked:
            errors.append({"field": "id_checked", "message": "This parcel holds a controlled "
                           "drug: check the recipient's ID before handing it over."})
        signature = _signature(signature_png)
        if signature is None:
            errors.append({"field": "signature", "message": "Ask the recipient to sign."})
        if errors:
            raise InvalidRequest("Proof of delivery is incomplete.", errors=errors)
        if photo is not None:
            if photo_store is None:  # pragma: no cover - a wiring mistake, not user input
                raise RuntimeError("a photo needs a photo store")
            photo_name = photo_store.save(photo)
        attempt = DeliveryAttempt(stop_id=stop.id, courier_id=courier.id,
                                  client_action_id=client_action_id,
                                  outcome=AttemptOutcome.DELIVERED, recipient_name=name[:200],
                                  id_checked=bool(id_checked), signature_svg=signature,
                                  photo_path=photo_name,
                                  latitude=latitude, longitude=longitude, attempted_at=now)
        stop.status = StopStatus.DELIVERED
        if order.status is OrderStatus.OUT_FOR_DELIVERY:
            orders.advance(session, order, OrderStatus.DELIVERED, actor=user,
                           before_recall=before_recall,
                           reason="handed over before the recall reached the courier"
                           if before_recall else None)
        patient = session.get(PatientProfile, order.patient_id)
        if patient is not None:
            from . import notify

            notify.create_notification(session, kind="order.delivered", patient=patient,
                                       dedupe_key=f"delivered:{order.id}",
                                       given_name=patient.given_name,
                                       reference=order.reference)
    elif action == "failed":
        if failure_reason not in FAILURE_REASONS and failure_reason != RECALLED:
            raise InvalidRequest("Choose why the delivery failed.",
                                 errors=[{"field": "failure_reason",
                                          "message": ", ".join(FAILURE_REASONS)}])
        attempt = DeliveryAttempt(stop_id=stop.id, courier_id=courier.id,
                                  client_action_id=client_action_id,
                                  outcome=AttemptOutcome.FAILED, failure_reason=failure_reason,
                                  latitude=latitude, longitude=longitude, attempted_at=now)
        stop.status = StopStatus.FAILED
        if order.status is OrderStatus.OUT_FOR_DELIVERY:
            orders.advance(session, order, OrderStatus.FAILED, actor=user,
                           reason=FAILURE_REASONS.get(failure_reason, RECALLED_WORDS))
        if order.recalled_at is None:
            _offer_new_slot(session, stop)
    else:
        raise InvalidRequest("Unknown action: use arrived, delivered or failed.")
    stop.completed_at = now
    session.add(attempt)
    try:
        session.flush()
    except Exception:
        if photo_name is not None and photo_store is not None:
            photo_store.discard(photo_name)
        raise
    audit.record(session, action=f"delivery.{action}", entity_type="delivery_stop",
                 entity_id=stop.id, actor=user,
                 after={"attempt": attempt.id, "order": order.id,
                        "reason": failure_reason, "id_checked": bool(id_checked),
                        "photo": photo_name is not None,
                        "recorded_at": recorded_at.isoformat() if recorded_at else None,
                        "before_recall": before_recall})
    recompute_etas(session, stop, now=now)
    return ActionResult(stop, attempt, False)


def lock_open_stops(session: Session, order_id: int) -> list[DeliveryStop]:
    """Lock an order's stops still open on a route. Taken before the order's own lock, in
    the courier's order (stop, then order), so that the two never deadlock."""
    return list(session.scalars(select(DeliveryStop).where(
        DeliveryStop.order_id == order_id,
        DeliveryStop.status.in_([StopStatus.PENDING, StopStatus.ARRIVED]))
        .order_by(DeliveryStop.id).with_for_update()
        .execution_options(populate_existing=True)))


def close_stops_brought_back(session: Session, order: Order, *, actor: User) -> None:
    """A recalled parcel back at the pharmacy without a courier's word on it: its stops
    still open on a route are closed as failed (no attempt), so the route shows it done."""
    now = utcnow()
    for stop in lock_open_stops(session, order.id):
        stop.status, stop.completed_at = StopStatus.FAILED, now
        audit.record(session, action="delivery.brought_back", entity_type="delivery_stop",
                     entity_id=stop.id, actor=actor, reason=RECALLED_WORDS,
                     after={"order": order.id, "recalled": True})
    session.flush()


def expire_delivery_photos(session: Session, *, retention: timedelta,
                           now: datetime | None = None) -> list[str]:
    """Forget the photos of attempts older than ``retention`` (audited per attempt); the
    caller commits, then deletes the returned files. The attempt itself, with recipient,
    ID check and signature, is kept."""
    now = now or utcnow()
    attempts = session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.photo_path.is_not(None),
                                      DeliveryAttempt.attempted_at < now - retention)
        .order_by(DeliveryAttempt.id).with_for_update(skip_locked=True)).all()
    names = []
    for attempt in attempts:
        assert attempt.photo_path is not None
        names.append(attempt.photo_path)
        attempt.photo_path = None
        audit.record(session, action="delivery.photo_deleted", entity_type="delivery_attempt",
                     entity_id=attempt.id, reason=f"kept {retention.days} days",
                     before={"photo": True}, after={"photo": False})
    session.flush()
    return names


def photo_of_attempt(session: Session, user: User, attempt_id: int) -> str:
    """The stored photo name of a delivery attempt, for a pharmacist, an admin or the courier
    of its route; anyone else is told it does not exist."""
    attempt = session.get(DeliveryAttempt, attempt_id)
    if attempt is None or attempt.photo_path is None:
        raise NotFound("No photo for that delivery.")
    if user.role is Role.COURIER:
        stop = session.get(DeliveryStop, attempt.stop_id)
        route = session.get(DeliveryRoute, stop.route_id) if stop and stop.route_id else None
        courier = user.courier
        assigned = {attempt.courier_id, route.courier_id if route else None}
        if courier is None or courier.id not in assigned:
            raise NotFound("No photo for that delivery.")
    elif user.role not in (Role.PHARMACIST, Role.ADMIN):
        raise NotFound("No photo for that delivery.")
    return attempt.photo_path


def recompute_etas(session: Session, done: DeliveryStop, *, now: datetime) -> None:
    """Shift the remaining stops of the route by how late (or early) this one finished."""
    if done.route_id is None or done.planned_arrival is None:
        return
    delay = now - (done.planned_arrival + timedelta(seconds=SERVICE_S))
    remaining = session.scalars(select(DeliveryStop).where(
        DeliveryStop.route_id == done.route_id, DeliveryStop.sequence > (done.sequence or 0),
        DeliveryStop.status.in_([StopStatus.PENDING, StopStatus.ARRIVED]))
        .order_by(DeliveryStop.sequence)).all()
    for stop in remaining:
        if stop.planned_arrival is not None:
            stop.eta = max(stop.planned_arrival + delay, now)


@dataclass(frozen=True)
class Tracking:
    position: int          # this order's place among the route's remaining stops (1-based)
    of: int
    eta_from: datetime
    eta_to: datetime


def tracking_for(session: Session, order: Order) -> Tracking | None:
    """"You are stop 3 of 5, expected 14:10-14:40", while the parcel is on its way."""
    stop = session.scalar(select(DeliveryStop).where(DeliveryStop.order_id == order.id)
                          .order_by(DeliveryStop.id.desc()))
    if stop is None or stop.route_id is None or stop.eta is None:
        return None
    route_stops = session.scalars(select(DeliveryStop).where(
        DeliveryStop.route_id == stop.route_id).order_by(DeliveryStop.sequence)).all()
    open_stops = [s for s in route_stops if s.status in (StopStatus.PENDING, StopStatus.ARRIVED)]
    if stop not in open_stops:
        return None
    return Tracking(open_stops.index(stop) + 1, len(open_stops),
                    stop.eta - timedelta(minutes=10), stop.eta + timedelta(minutes=20))


# --- the planner ---------------------------------------------------------------------------------

def waves_on(session: Session, pharmacy: Pharmacy, day: date) -> list[tuple[DeliverySlot,
                                                                         DeliveryWave | None]]:
    """The day's slots, each with its wave once it has one."""
    from . import slots as slot_service

    out = []
    for slot in slot_service.ensure_slots(session, pharmacy, day):
        wave = session.scalar(select(DeliveryWave).where(
            DeliveryWave.pharmacy_id == pharmacy.id, DeliveryWave.window_start == slot.starts_at))
        out.append((slot, wave))
    return out


def replan(session: Session, wave: DeliveryWave, *, actor: User) -> DeliveryWave:
    """Plan a planned wave again (new orders, a van off sick), before any route has left."""
    """Plan a wave again: new orders, a van off sick, a courier running late.

    Vans already on the road re-plan from where they are, keeping the parcels on board;
    the others' stops may move freely.
    """
    if wave.status not in (WaveStatus.PLANNED, WaveStatus.DISPATCHED):
        raise Conflict(f"A wave that is {wave.status.value} cannot be re-planned now.")
    return request_planning(session, wave, actor=actor)


def move_stop(session: Session, stop_id: int, route_id: int, *, actor: User) -> DeliveryStop:
    """Move a stop to the end of another route of the same wave (planner's override)."""
    stop = session.scalar(select(DeliveryStop).where(DeliveryStop.id == stop_id)
                          .with_for_update())
    target = session.get(DeliveryRoute, route_id)
    if stop is None or target is None:
        raise NotFound("No such stop or route.")
    if target.wave_id != stop.wave_id:
        raise InvalidRequest("Move stops only between routes of the same wave.")
    if target.started_at is not None or (
            stop.route_id is not None and session.get(DeliveryRoute, stop.route_id)
            .started_at is not None):  # type: ignore[union-attr]
        raise Conflict("That route has already left the pharmacy.")
    if stop.status not in (StopStatus.PENDING, StopStatus.UNSERVED):
        raise Conflict("Only stops not yet attempted can be moved.")
    order = session.get(Order, stop.order_id)
    van = session.get(Vehicle, target.vehicle_id)
    assert order is not None and van is not None
    if order.needs_fridge and not van.has_fridge:
        raise InvalidRequest("This parcel needs a fridge van.")
    on_target = session.scalars(select(DeliveryStop).where(
        DeliveryStop.route_id == target.id).order_by(DeliveryStop.sequence)).all()
    on_van = [session.get(Order, s.order_id) for s in on_target]
    if sum(o.parcel_count for o in on_van if o is not None) + order.parcel_count \
            > van.capacity_parcels:
        raise InvalidRequest("That van is full.")
    source_id = stop.route_id
    stop.route_id = target.id
    stop.sequence = len(on_target) + 1
    stop.status, stop.unserved_reason = StopStatus.PENDING, None
    stop.eta = None  # unknown until the route is timed again
    if source_id is not None:
        rest = session.scalars(select(DeliveryStop).where(
            DeliveryStop.route_id == source_id, DeliveryStop.id != stop.id)
            .order_by(DeliveryStop.sequence)).all()
        for n, other in enumerate(rest, start=1):
            other.sequence = n
    audit.record(session, action="delivery.stop_moved", entity_type="delivery_stop",
                 entity_id=stop.id, actor=actor, before={"route": source_id},
                 after={"route": target.id})
    session.flush()
    return stop
