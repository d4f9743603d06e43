"""The planner's pages: plan a slot, see the routes on a map and a table, move a stop."""

from __future__ import annotations

import re

from sqlalchemy import select

from pharmacy.models import DeliveryRoute, DeliveryStop, DeliveryWave, Role, WaveStatus
from tests.delivery.conftest import make_wave_orders
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.helpers import csrf_token, web_login


def test_planner_plans_a_slot_shows_the_map_and_moves_a_stop(client, db, redis,  # type: ignore[no-untyped-def]
                                                             fast_routing) -> None:
    from pharmacy.jobs.deliveries import plan_wave

    slot = make_wave_orders(db, 14, fridge_every=0)
    slot_id = slot.id
    planner = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    web_login(client, planner.email, DEFAULT_PASSWORD)
    day = slot.starts_at.date().isoformat()
    page = client.get(f"/planner/?day={day}").get_data(as_text=True)
    assert f"/planner/slots/{slot_id}/plan" in page
    response = client.post(f"/planner/slots/{slot_id}/plan",
                           data={"csrf_token": csrf_token(client, "/planner/")})
    assert response.status_code == 302
    wave_id = int(re.search(r"/planner/waves/(\d+)", response.headers["Location"]).group(1))
    assert plan_wave(wave_id, 0) == wave_id
    page = client.get(f"/planner/waves/{wave_id}").get_data(as_text=True)
    assert "<svg" in page and "planned" in page
    routes = db.session.scalars(select(DeliveryRoute).where(
        DeliveryRoute.wave_id == wave_id).order_by(DeliveryRoute.id)).all()
    assert len(routes) >= 2
    moving = routes[0].stops[0].id
    token = csrf_token(client, f"/planner/waves/{wave_id}")
    client.post(f"/planner/waves/{wave_id}/moves", data={
        "csrf_token": token, "stop_id": str(moving), "route_id": str(routes[1].id)})
    db.session.expire_all()
    assert db.session.get(DeliveryStop, moving).route_id == routes[1].id
    sequences = sorted(s.sequence for s in db.session.get(DeliveryRoute, routes[0].id).stops)
    assert sequences == list(range(1, len(sequences) + 1))
    client.post(f"/planner/waves/{wave_id}/replan", data={"csrf_token": token})
    db.session.expire_all()
    assert db.session.get(DeliveryWave, wave_id).status is WaveStatus.PLANNING


def test_couriers_and_patients_cannot_open_the_planner(client, db) -> None:  # type: ignore[no-untyped-def]
    courier = UserFactory(role=Role.COURIER)
    db.session.commit()
    web_login(client, courier.email, DEFAULT_PASSWORD)
    assert client.get("/planner/").status_code == 403
