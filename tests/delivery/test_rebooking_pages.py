"""Choosing another delivery slot on the API and the tracking page."""

from __future__ import annotations

from datetime import UTC

from pharmacy.models import Order, OrderStatus
from tests.delivery.conftest import (
    PATIENT_PASSWORD,
    first_order,
    make_unserved,
    make_wave_orders,
    patient_email,
    slot_at,
    wave_orders,
)
from tests.pharmacy.helpers import api_token, csrf_token, web_login


def test_api_owner_states_and_errors(client, db) -> None:  # type: ignore[no-untyped-def]
    slot = make_wave_orders(db, 3, fridge_every=0)
    mine, other = wave_orders(db)[:2]
    make_unserved(db, slot, mine)
    later = slot_at(db, slot, 16)
    token = api_token(client, patient_email(db, mine), PATIENT_PASSWORD)
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/v1/orders/{mine.id}/delivery-slot"
    mine_id = mine.id

    # The order's own page says it needs a new slot, and why.
    before = client.get(f"/api/v1/orders/{mine.id}", headers=headers).get_json()
    assert before["rebook"]["kind"] == "unserved" and before["rebook"]["message"]
    assert client.post(f"/api/v1/orders/{other.id}/delivery-slot", headers=headers,
                       json={"slot_id": later.id}).status_code == 404
    bad = client.post(url, headers=headers, json={"slot_id": "soon"})
    assert bad.status_code == 422 and bad.mimetype == "application/problem+json"
    assert client.post(url, headers=headers, json={"slot_id": 2_000_000}).status_code == 422
    done = client.post(url, headers=headers, json={"slot_id": later.id})
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["delivery_window_start"].startswith(
        later.starts_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M"))
    again = client.post(url, headers=headers, json={"slot_id": later.id})
    assert again.status_code == 200 and again.get_json() == done.get_json()
    assert client.get(f"/api/v1/orders/{mine_id}", headers=headers).get_json()["rebook"] is None

    for status in (OrderStatus.PLACED, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED,
                   OrderStatus.RETURNED):
        db.session.expire_all()  # the requests moved the order's version on
        db.session.get(Order, mine_id).status = status
        db.session.commit()
        refused = client.post(url, headers=headers, json={"slot_id": slot_at(db, slot, 18).id})
        assert refused.status_code == 409, (status, refused.get_json())
        assert refused.get_json()["code"] == "not_rebookable"
    spec = client.get("/api/openapi.json").get_json()
    operation = spec["paths"]["/api/v1/orders/{order_id}/delivery-slot"]["post"]
    assert {"200", "404", "409", "422"} <= set(operation["responses"])


def test_tracking_page_offers_slots_and_explains_errors(client, db) -> None:  # type: ignore[no-untyped-def]
    slot = make_wave_orders(db, 1, fridge_every=0)
    order = first_order(db)
    make_unserved(db, slot, order)
    later, full = slot_at(db, slot, 16), slot_at(db, slot, 14)
    full.booked = full.capacity
    db.session.commit()
    assert web_login(client, patient_email(db, order), PATIENT_PASSWORD).status_code == 302
    page = client.get(f"/patient/orders/{order.id}").get_data(as_text=True)
    assert "Please choose a new delivery time" in page
    assert "could not fit your delivery" in page
    assert f'value="{later.id}"' in page and f'value="{full.id}"' not in page
    token = csrf_token(client, f"/patient/orders/{order.id}")
    url = f"/patient/orders/{order.id}/delivery-slot"

    for value, message in (("tomorrow", "Choose one of the delivery slots offered"),
                           (str(full.id), "it is full"),
                           ("99999999999", "Choose one of the delivery slots offered")):
        response = client.post(url, data={"csrf_token": token, "slot_id": value},
                               follow_redirects=True)
        assert response.status_code == 200 and message in response.get_data(as_text=True)
    expired = client.post(url, data={"slot_id": str(later.id)})
    assert expired.status_code == 400 and "CSRF token is missing" in expired.get_data(as_text=True)

    done = client.post(url, data={"csrf_token": token, "slot_id": str(later.id)},
                       follow_redirects=True)
    text = done.get_data(as_text=True)
    assert done.status_code == 200 and "Your new delivery time is" in text
    assert "16:00" in text and "Please choose a new delivery time" not in text
    db.session.expire_all()
    assert db.session.get(Order, order.id).delivery_slot_id == later.id
