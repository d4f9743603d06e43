"""Couriers' actions: idempotent, proof of delivery, ID checks for controlled drugs, 403s."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest
from sqlalchemy import func, select

from pharmacy.models import (
    DeliveryAttempt,
    DeliveryRoute,
    DeliveryStop,
    Order,
    OrderStatus,
    StopStatus,
    User,
)
from pharmacy.services import delivery
from tests.delivery.conftest import make_wave_orders
from tests.pharmacy.helpers import csrf_token, web_login


def png_data_url() -> str:
    """A tiny valid PNG, as the signature pad would send."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(raw).decode()


@pytest.fixture()
def planned(db, fast_routing):  # type: ignore[no-untyped-def]
    from pharmacy.jobs.deliveries import plan_wave

    slot = make_wave_orders(db, 12, fridge_every=0, cd_every=4)
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    assert plan_wave(wave_id, 0) == wave_id
    routes = db.session.scalars(select(DeliveryRoute).order_by(DeliveryRoute.id)).all()
    assert len(routes) >= 2, "the test needs two couriers with routes"
    return routes


def _login_courier(client, db, route) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.models import Courier

    courier = db.session.get(Courier, route.courier_id)
    user = db.session.get(User, courier.user_id)
    email = user.email
    password = "demo-courier-1"
    assert web_login(client, email, password).status_code == 302


def _act(client, stop_id: int, token: str, **fields):  # type: ignore[no-untyped-def]
    return client.post(f"/courier/stops/{stop_id}/actions",
                       data={"csrf_token": token, **fields})


def test_the_same_action_sent_three_times_is_recorded_once(client, db, planned) -> None:  # type: ignore[no-untyped-def]
    route = planned[0]
    _login_courier(client, db, route)
    token = csrf_token(client, f"/courier/routes/{route.id}")
    assert client.post(f"/courier/routes/{route.id}/start",
                       data={"csrf_token": token}).status_code == 302
    stop = next(s for s in route.stops if not any(
        line.medicine.cd_schedule for line in db.session.get(Order, s.order_id).lines))
    for _ in range(3):
        response = _act(client, stop.id, token, action="delivered", client_action_id="abc-123",
                        recipient_name="Pat Doe", signature=png_data_url())
        assert response.status_code == 200, response.get_json()
    assert db.session.scalar(select(func.count(DeliveryAttempt.id))) == 1
    db.session.expire_all()
    assert db.session.get(DeliveryStop, stop.id).status is StopStatus.DELIVERED
    assert db.session.get(Order, stop.order_id).status is OrderStatus.DELIVERED
    # Starting the route again does not dispatch (or capture) anything twice.
    assert client.post(f"/courier/routes/{route.id}/start",
                       data={"csrf_token": token}).status_code == 302
    from pharmacy.models import AuditEvent

    assert db.session.scalar(select(func.count(AuditEvent.id)).where(
        AuditEvent.action == "order.out_for_delivery",
        AuditEvent.entity_id == str(stop.order_id))) == 1


def test_a_controlled_drug_needs_the_id_check_and_a_failed_stop_needs_a_reason(
        client, db, planned) -> None:  # type: ignore[no-untyped-def]
    route = next(r for r in planned if any(
        line.medicine.cd_schedule for s in r.stops
        for line in db.session.get(Order, s.order_id).lines))
    _login_courier(client, db, route)
    token = csrf_token(client, f"/courier/routes/{route.id}")
    client.post(f"/courier/routes/{route.id}/start", data={"csrf_token": token})
    cd_stop = next(s for s in route.stops if any(
        line.medicine.cd_schedule for line in db.session.get(Order, s.order_id).lines))
    # The register's supply line is written at packing; the handover is the delivery's.
    from pharmacy.models import CDEntryKind
    from pharmacy.services import inventory_ledger as ledger

    cd_order = db.session.get(Order, cd_stop.order_id)
    cd_line = next(line for line in cd_order.lines if line.medicine.cd_schedule)
    ledger.add_register_entry(db.session, pharmacy_id=cd_order.pharmacy_id,
                              medicine_id=cd_line.medicine_id, kind=CDEntryKind.RECEIPT,
                              quantity=10, counterparty="AAH", actor=None)
    supply = ledger.add_register_entry(
        db.session, pharmacy_id=cd_order.pharmacy_id, medicine_id=cd_line.medicine_id,
        kind=CDEntryKind.SUPPLY, quantity=-1, counterparty="patient", actor=None,
        order_id=cd_order.id, patient_id=cd_order.patient_id)
    db.session.commit()
    assert ledger.register_handovers(db.session, supply.register_id) == {}
    refused = _act(client, cd_stop.id, token, action="delivered", client_action_id="cd-1",
                   recipient_name="Pat Doe", signature=png_data_url())
    assert refused.status_code == 422
    assert any(e["field"] == "id_checked" for e in refused.get_json()["errors"])
    page = client.get(f"/courier/stops/{cd_stop.id}").get_data(as_text=True)
    assert "CD: check ID" in page
    done = _act(client, cd_stop.id, token, action="delivered", client_action_id="cd-2",
                recipient_name="Pat Doe", signature=png_data_url(), id_checked="yes")
    assert done.status_code == 200
    handover = ledger.register_handovers(db.session, supply.register_id)[supply.id]
    assert (handover.recipient, handover.id_checked) == ("Pat Doe", True)
    other = next(s for s in route.stops if s.id != cd_stop.id)
    assert _act(client, other.id, token, action="failed", client_action_id="f-1",
                failure_reason="teleported").status_code == 422
    failed = _act(client, other.id, token, action="failed", client_action_id="f-2",
                  failure_reason="not_home")
    assert failed.status_code == 200
    db.session.expire_all()
    assert db.session.get(Order, other.order_id).status is OrderStatus.FAILED
    bad_signature = _act(client, other.id, token, action="delivered", client_action_id="x",
                         recipient_name="A", signature="data:image/png;base64,AAAA")
    assert bad_signature.status_code in (409, 422)


def test_a_courier_cannot_see_or_act_on_another_couriers_stops(client, db, planned) -> None:  # type: ignore[no-untyped-def]
    mine, theirs = planned[0], planned[1]
    _login_courier(client, db, mine)
    token = csrf_token(client, f"/courier/routes/{mine.id}")
    foreign = theirs.stops[0]
    assert client.get(f"/courier/routes/{theirs.id}").status_code == 403
    assert client.get(f"/courier/stops/{foreign.id}").status_code == 403
    response = _act(client, foreign.id, token, action="arrived", client_action_id="spy")
    assert response.status_code == 403
    assert db.session.get(DeliveryStop, foreign.id).arrived_at is None
    page = client.get(f"/courier/routes/{mine.id}").get_data(as_text=True)
    assert "<svg" in page and "geo:" not in page  # the map; links are on each stop page
    stop_page = client.get(f"/courier/stops/{mine.stops[0].id}").get_data(as_text=True)
    assert "geo:" in stop_page and "openstreetmap.org" in stop_page


def test_patient_tracking_shows_the_stop_position_and_window(client, db, planned) -> None:  # type: ignore[no-untyped-def]
    route = planned[0]
    stop = route.stops[-1]
    order = db.session.get(Order, stop.order_id)
    tracking = delivery.tracking_for(db.session, order)
    assert tracking is not None and tracking.position == tracking.of == len(route.stops)
    assert tracking.eta_from < tracking.eta_to


def test_replanning_a_dispatched_wave_keeps_started_routes_with_their_vans(
        client, db, planned) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.jobs.deliveries import plan_wave
    from pharmacy.models import DeliveryWave, WaveStatus

    route = planned[0]
    route_id, wave_id = route.id, route.wave_id
    _login_courier(client, db, route)
    token = csrf_token(client, f"/courier/routes/{route_id}")
    client.post(f"/courier/routes/{route_id}/start", data={"csrf_token": token})
    first = route.stops[0].id
    _act(client, first, token, action="delivered", client_action_id="r-1",
         recipient_name="Pat", signature=png_data_url(), id_checked="yes")
    db.session.expire_all()
    on_board = {s.id for s in db.session.get(DeliveryRoute, route_id).stops
                if s.status is StopStatus.PENDING}
    wave = db.session.get(DeliveryWave, wave_id)
    assert wave.status is WaveStatus.DISPATCHED
    admin = __import__("tests.factories", fromlist=["UserFactory"]).UserFactory(
        role=__import__("pharmacy.models", fromlist=["Role"]).Role.ADMIN)
    delivery.replan(db.session, wave, actor=admin)
    db.session.commit()
    assert plan_wave(wave_id, 1) == wave_id
    db.session.expire_all()
    after = db.session.get(DeliveryRoute, route_id)
    assert {s.id for s in after.stops if s.status is StopStatus.PENDING} == on_board
    assert db.session.get(DeliveryStop, first).route_id == route_id  # history stays
    assert db.session.get(DeliveryWave, wave_id).status is WaveStatus.DISPATCHED
    sequences = [s.sequence for s in after.stops]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


def test_a_cancelled_parcel_leaves_the_route_and_cannot_be_handed_over(  # type: ignore[no-untyped-def]
        client, db, planned) -> None:
    from pharmacy.services import orders

    route = planned[0]
    stop = route.stops[0]
    order = db.session.get(Order, stop.order_id)
    assert order.status is OrderStatus.PACKED
    stop_id = stop.id
    orders.cancel(db.session, order, actor=None, reason="patient went into hospital")
    db.session.commit()
    assert db.session.get(DeliveryStop, stop_id) is None
    _login_courier(client, db, route)
    page = client.get(f"/courier/routes/{route.id}").get_data(as_text=True)
    assert f"/courier/stops/{stop_id}" not in page
    token = csrf_token(client, f"/courier/routes/{route.id}")
    handed = _act(client, stop_id, token, action="delivered", client_action_id="gone-1",
                  recipient_name="Pat", signature=png_data_url(), id_checked="yes")
    assert handed.status_code == 404


def test_nothing_is_recorded_as_delivered_before_the_route_starts(client, db, planned) -> None:  # type: ignore[no-untyped-def]
    route = planned[0]
    stop = route.stops[0]
    _login_courier(client, db, route)
    token = csrf_token(client, f"/courier/routes/{route.id}")
    early = _act(client, stop.id, token, action="delivered", client_action_id="early-1",
                 recipient_name="Pat", signature=png_data_url(), id_checked="yes")
    assert early.status_code == 409
    assert "Start the route" in early.get_json()["error"]
    db.session.expire_all()
    assert db.session.get(DeliveryStop, stop.id).status is StopStatus.PENDING
    assert db.session.get(Order, stop.order_id).status is OrderStatus.PACKED


def test_an_address_that_cannot_be_located_is_unserved_with_the_reason(db, fast_routing) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.jobs.deliveries import plan_wave
    from pharmacy.models import Address
    from pharmacy.services import rebooking

    slot = make_wave_orders(db, 6, fridge_every=0)
    lost = db.session.scalar(select(Order).where(Order.status == OrderStatus.PACKED)
                             .order_by(Order.id))
    lost_id = lost.id
    address = db.session.get(Address, lost.address_id)
    address.latitude = address.longitude = None
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    assert plan_wave(wave_id, 0) == wave_id
    db.session.expire_all()
    stop = db.session.scalar(select(DeliveryStop).where(DeliveryStop.order_id == lost_id))
    assert stop.status is StopStatus.UNSERVED and stop.route_id is None
    assert "could not be located" in stop.unserved_reason
    reason = rebooking.rebook_reason(db.session, db.session.get(Order, lost_id))
    assert reason is not None and reason.kind == "unserved"


def test_a_wave_no_courier_can_take_goes_back_and_its_parcels_are_offered_other_slots(  # type: ignore[no-untyped-def]
        db, fast_routing) -> None:
    from pharmacy.jobs.deliveries import plan_wave
    from pharmacy.models import DeliveryWave, Vehicle, WaveStatus
    from pharmacy.services import rebooking

    slot = make_wave_orders(db, 3, fridge_every=0)
    for van in db.session.scalars(select(Vehicle)):
        van.is_active = False  # every van off the road
    wave = delivery.close_wave(db.session, slot)
    wave_id, version = wave.id, wave.plan_version
    db.session.commit()
    assert plan_wave(wave_id, version) is None
    db.session.expire_all()
    wave = db.session.get(DeliveryWave, wave_id)
    assert wave.status is WaveStatus.OPEN  # the cut-off sweep will try again
    stops = db.session.scalars(select(DeliveryStop).where(DeliveryStop.wave_id == wave_id)).all()
    assert stops and all(s.status is StopStatus.UNSERVED for s in stops)
    assert all("no delivery plan could be made" in s.unserved_reason for s in stops)
    order = db.session.get(Order, stops[0].order_id)
    assert rebooking.rebook_reason(db.session, order).kind == "unserved"
    # Vans back: the next sweep plans the wave again.
    for van in db.session.scalars(select(Vehicle)):
        van.is_active = True
    wave = delivery.close_wave(db.session, db.session.get(type(slot), slot.id))
    version = wave.plan_version
    db.session.commit()
    assert plan_wave(wave_id, version) == wave_id
    db.session.expire_all()
    assert db.session.get(DeliveryWave, wave_id).status is WaveStatus.PLANNED
