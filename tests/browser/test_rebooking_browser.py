"""A patient whose stop could not be planned picks another slot on the tracking page."""

from __future__ import annotations

from pharmacy.models import Order
from tests.delivery.conftest import (
    PATIENT_PASSWORD,
    first_order,
    make_unserved,
    make_wave_orders,
    patient_email,
    slot_at,
)


def test_patient_rebooks_an_unserved_delivery(live_server: str, chromium_browser, db) -> None:  # type: ignore[no-untyped-def]
    slot = make_wave_orders(db, 1, fridge_every=0)
    order = first_order(db)
    make_unserved(db, slot, order)
    order_id, email, later_id = order.id, patient_email(db, order), slot_at(db, slot, 16).id
    db.session.commit()

    page = chromium_browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{live_server}/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PATIENT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server}/patient/orders/{order_id}")
    assert "could not fit your delivery" in page.locator("#rebook").inner_text()
    page.locator(f"input[name=slot_id][value='{later_id}']").check()
    page.get_by_role("button", name="Deliver at this time").click()
    page.wait_for_url(f"**/patient/orders/{order_id}")
    assert "Your new delivery time is" in page.content()
    assert page.locator("#rebook").count() == 0
    page.close()
    db.session.expire_all()
    assert db.session.get(Order, order_id).delivery_slot_id == later_id
