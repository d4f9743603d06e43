"""Patients choosing another delivery slot after an unserved stop or a failed attempt."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from pharmacy.models import (
    AuditEvent,
    Courier,
    DeliveryRoute,
    DeliverySlot,
    DeliveryStop,
    DeliveryWave,
    Medicine,
    Notification,
    Order,
    OrderLine,
    OrderStatus,
    Prescription,
    PrescriptionItem,
    PrescriptionStatus,
    StopStatus,
    User,
    Vehicle,
)
from pharmacy.services import delivery, rebooking
from pharmacy.services.slots import SlotUnavailable
from tests.delivery.conftest import (
    LONDON,
    first_order,
    make_unserved,
    make_wave_orders,
    slot_at,
    wave_orders,
)


def test_an_unserved_stop_rebooked_is_planned_by_the_new_slots_wave(db, fast_routing) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.jobs.deliveries import plan_wave

    slot = make_wave_orders(db, 12, fridge_every=3)
    fridge_users = []
    for courier in db.session.scalars(select(Courier)).all():
        if db.session.get(Vehicle, courier.default_vehicle_id).has_fridge:
            fridge_users.append(db.session.get(User, courier.user_id))
    later = slot_at(db, slot, 16)  # laid out while the fridge vans were still on shift
    later_id, fridge_user_ids = later.id, [u.id for u in fridge_users]
    for user in fridge_users:
        user.is_active = False  # no fridge van for the first slot
    db.session.commit()
    old_wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    assert plan_wave(old_wave_id, 0) == old_wave_id
    stop = db.session.scalar(select(DeliveryStop).where(
        DeliveryStop.status == StopStatus.UNSERVED).order_by(DeliveryStop.id))
    order = db.session.get(Order, stop.order_id)
    assert order.needs_fridge
    assert db.session.scalar(select(Notification).where(
        Notification.kind == "delivery.rebook", Notification.patient_id == order.patient_id))
    reason = rebooking.rebook_reason(db.session, order)
    assert reason is not None and reason.kind == "unserved"
    later = db.session.get(DeliverySlot, later_id)  # the job ended the session
    assert later.id in {v.slot.id for v in rebooking.bookable_slots(db.session, order)}
    booked_before = later.booked

    result = rebooking.rebook_delivery(db.session, order, later.id, actor=None)
    db.session.commit()
    assert not result.replayed
    db.session.expire_all()
    order = db.session.get(Order, order.id)
    assert order.status is OrderStatus.PACKED and order.delivery_slot_id == later.id
    assert order.delivery_window_start == later.starts_at
    assert db.session.get(DeliverySlot, later.id).booked == booked_before + 1
    assert db.session.get(DeliverySlot, later.id).booked_fridge >= 1
    assert db.session.get(DeliveryStop, stop.id) is None  # off the old wave for good
    assert rebooking.rebook_reason(db.session, order) is None

    for user_id in fridge_user_ids:
        db.session.get(User, user_id).is_active = True
    old_wave = db.session.get(DeliveryWave, old_wave_id)
    delivery.replan(db.session, old_wave, actor=None)  # the old wave never takes it back
    problem, _ = delivery.build_problem(db.session, old_wave_id)
    assert len(problem.stops) == 11
    db.session.commit()
    new_wave = delivery.close_wave(db.session, db.session.get(DeliverySlot, later_id))
    db.session.commit()
    new_stop = db.session.scalar(select(DeliveryStop).where(
        DeliveryStop.wave_id == new_wave.id, DeliveryStop.order_id == order.id))
    assert new_stop is not None
    new_stop_id, new_wave_id, order_id = new_stop.id, new_wave.id, order.id
    assert plan_wave(new_wave_id, new_wave.plan_version) == new_wave_id
    new_stop = db.session.get(DeliveryStop, new_stop_id)
    assert new_stop.status is StopStatus.PENDING and new_stop.route_id is not None
    assert db.session.scalar(select(func.count(AuditEvent.id)).where(
        AuditEvent.action == "order.delivery_rebooked",
        AuditEvent.entity_id == str(order_id))) == 1


def test_a_failed_attempt_rebooked_goes_back_to_packed_and_is_planned_again(
        db, fast_routing) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.jobs.deliveries import plan_wave

    slot = make_wave_orders(db, 6, fridge_every=0)
    later_id = slot_at(db, slot, 16).id
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    assert plan_wave(wave_id, 0) == wave_id
    route = db.session.scalars(select(DeliveryRoute).order_by(DeliveryRoute.id)).first()
    courier_user = db.session.get(User, db.session.get(Courier, route.courier_id).user_id)
    delivery.start_route(db.session, route, actor=courier_user)
    stop = route.stops[0]
    delivery.record_action(db.session, courier_user, stop.id, action="failed",
                           client_action_id="fail-1", failure_reason="not_home")
    db.session.commit()
    order = db.session.get(Order, stop.order_id)
    assert order.status is OrderStatus.FAILED
    reason = rebooking.rebook_reason(db.session, order)
    assert reason.kind == "failed" and "nobody was at home" in reason.message

    rebooking.rebook_delivery(db.session, order, later_id, actor=None)
    db.session.commit()
    db.session.expire_all()
    order = db.session.get(Order, stop.order_id)
    assert order.status is OrderStatus.PACKED and order.delivery_slot_id == later_id
    assert db.session.get(DeliveryStop, stop.id).status is StopStatus.FAILED  # kept, not re-run
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "order.packed", AuditEvent.entity_id == str(order.id),
        AuditEvent.reason == "rebooked after a failed delivery")) is not None
    new_wave = delivery.close_wave(db.session, db.session.get(DeliverySlot, later_id))
    db.session.commit()
    new_wave_id, order_id = new_wave.id, order.id
    assert plan_wave(new_wave_id, new_wave.plan_version) == new_wave_id
    order = db.session.get(Order, order_id)
    new_stop = db.session.scalar(select(DeliveryStop).where(
        DeliveryStop.wave_id == new_wave_id, DeliveryStop.order_id == order_id))
    assert new_stop.route_id is not None and new_stop.status is StopStatus.PENDING
    assert delivery.tracking_for(db.session, order) is not None


def test_full_slots_fridge_places_and_the_same_request_twice(db) -> None:  # type: ignore[no-untyped-def]
    slot = make_wave_orders(db, 3, fridge_every=2)
    plain = first_order(db)
    cold = wave_orders(db, fridge=True)[0]
    make_unserved(db, slot, plain)
    make_unserved(db, slot, cold)
    full, no_fridge, free = slot_at(db, slot, 14), slot_at(db, slot, 16), slot_at(db, slot, 18)
    full.booked = full.capacity
    no_fridge.booked_fridge = no_fridge.fridge_capacity
    db.session.commit()
    with pytest.raises(SlotUnavailable, match="full"):
        rebooking.rebook_delivery(db.session, plain, full.id, actor=None)
    db.session.rollback()
    with pytest.raises(SlotUnavailable, match="fridge"):
        rebooking.rebook_delivery(db.session, cold, no_fridge.id, actor=None)
    db.session.rollback()
    assert no_fridge.id not in {v.slot.id for v in rebooking.bookable_slots(db.session, cold)}
    assert full.id not in {v.slot.id for v in rebooking.bookable_slots(db.session, plain)}
    with pytest.raises(rebooking.NotRebookable):  # the slot that did not work out
        rebooking.rebook_delivery(db.session, plain, slot.id, actor=None)
    db.session.rollback()

    booked = free.booked
    assert not rebooking.rebook_delivery(db.session, plain, free.id, actor=None).replayed
    db.session.commit()
    assert rebooking.rebook_delivery(db.session, plain, free.id, actor=None).replayed
    db.session.commit()
    assert db.session.get(DeliverySlot, free.id).booked == booked + 1
    assert db.session.scalar(select(func.count(AuditEvent.id)).where(
        AuditEvent.action == "order.delivery_rebooked")) == 1
    with pytest.raises(rebooking.NotRebookable):  # rebooked once; not again elsewhere
        rebooking.rebook_delivery(db.session, plain, no_fridge.id, actor=None)
    db.session.rollback()


def test_a_controlled_drug_is_not_moved_past_its_prescriptions_28_days(db) -> None:  # type: ignore[no-untyped-def]
    slot = make_wave_orders(db, 1, fridge_every=0)
    order = first_order(db)
    medicine = db.session.scalar(select(Medicine).where(Medicine.cd_schedule == 2))
    issued = slot.starts_at.astimezone(LONDON).date() - timedelta(days=28)  # last day: slot's
    rx = Prescription(prescription_id="REBOOK-CD", patient_id=order.patient_id,
                      status=PrescriptionStatus.VERIFIED, issued_on=issued,
                      source_bundle={"resourceType": "Bundle"})
    rx.items.append(PrescriptionItem(line_id="1", medicine_id=medicine.id,
                                     medication_code=medicine.code,
                                     medication_display=medicine.name, quantity=Decimal(10)))
    db.session.add(rx)
    db.session.flush()
    order.lines.append(OrderLine(medicine_id=medicine.id, prescription_item_id=rx.items[0].id,
                                 quantity=10, unit_price_minor=0, line_total_minor=0,
                                 status="packed", quantity_supplied=10,
                                 is_prescription_item=True))
    db.session.commit()
    make_unserved(db, slot, order)
    same_day, next_day = slot_at(db, slot, 16), slot_at(db, slot, 12, days=1)
    offered = {v.slot.id for v in rebooking.bookable_slots(db.session, order)}
    assert same_day.id in offered and next_day.id not in offered
    with pytest.raises(rebooking.InvalidRequest, match="controlled drug"):
        rebooking.rebook_delivery(db.session, order, next_day.id, actor=None)
    db.session.rollback()
    rebooking.rebook_delivery(db.session, order, same_day.id, actor=None)
    db.session.commit()


def test_an_order_packed_after_its_van_left_can_move_to_another_slot(db) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.models import DeliveryStop, Order, OrderStatus, WaveStatus
    from tests.delivery.conftest import make_wave_orders

    slot = make_wave_orders(db, 1, fridge_every=0)
    order = db.session.scalar(select(Order).where(Order.status == OrderStatus.PACKED))
    assert rebooking.rebook_reason(db.session, order) is None  # waiting for its wave
    wave = delivery.close_wave(db.session, slot)
    db.session.flush()
    # It was packed too late for the plan: the van left without it.
    for stop in db.session.scalars(select(DeliveryStop).where(DeliveryStop.order_id == order.id)):
        db.session.delete(stop)
    wave.status = WaveStatus.DISPATCHED
    db.session.commit()
    reason = rebooking.rebook_reason(db.session, order)
    assert reason is not None and reason.kind == "missed"
    assert "van" in reason.message
    other = next(v.slot for v in rebooking.bookable_slots(db.session, order))
    rebooking.rebook_delivery(db.session, order, other.id, actor=None)
    db.session.commit()
    assert order.delivery_slot_id == other.id and order.status is OrderStatus.PACKED
    assert rebooking.rebook_reason(db.session, order) is None
