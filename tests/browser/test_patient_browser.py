"""The demo patient orders a repeat and an OTC product, pays by card and tracks the order."""

from __future__ import annotations

from pathlib import Path

import pytest

from pharmacy.models import Order, PaymentStatus
from pharmacy.services.demo import seed_demo
from tests.browser.conftest import screenshot_path


@pytest.fixture()
def demo(db, app, stripe_config, monkeypatch):  # type: ignore[no-untyped-def] # noqa: F811
    monkeypatch.setitem(app.config, "STRIPE_PUBLISHABLE_KEY", "pk_test_dispensary_browser")
    seed_demo(db.session)
    db.session.commit()


def test_demo_patient_orders_pays_and_tracks(live_server: str, chromium_browser, demo, db,  # type: ignore[no-untyped-def]
                                            tmp_path: Path) -> None:
    page = chromium_browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{live_server}/login")
    page.get_by_label("E-mail").fill("patient@example.com")
    page.get_by_label("Password").fill("demo-patient-1")
    page.get_by_role("button", name="Sign in").click()

    page.get_by_role("link", name="My medicines").click()
    page.get_by_role("button", name="to basket").first.click()
    assert "Added to your basket." in page.content()
    page.goto(f"{live_server}/patient/shop")
    product = page.locator("li.card", has_text="Cetirizine 10mg tablets")
    for question, answer in (("for_self_adult", "yes"), ("symptoms_over_a_week", "no"),
                             ("other_medicines", "no"), ("pregnant", "no"),
                             ("conditions", "no"), ("tried_before", "no")):
        product.locator(f"input[name={question}][value={answer}]").check()
    product.get_by_role("button", name="Add Cetirizine 10mg tablets to basket").click()
    page.screenshot(path=str(screenshot_path(tmp_path, "patient-basket.png")), full_page=True)

    assert page.locator("input[name=slot_id]").count() > 0
    page.locator("input[name=slot_id]").nth(1).check()
    page.get_by_role("button", name="Place order").click()
    assert "/pay" in page.url, page.locator("main").inner_text()

    card = page.locator("#card-element input")
    card.nth(0).fill("4242424242424242")
    card.nth(1).fill("12")
    card.nth(2).fill("31")
    card.nth(3).fill("123")
    card.nth(4).fill("LS1 5")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url("**/patient/orders/*", timeout=30_000)
    status = page.locator("#order-status").inner_text()
    assert status in ("awaiting verification", "ready to pick")
    assert "Payment: authorised" in page.content()
    page.screenshot(path=str(screenshot_path(tmp_path, "patient-tracking.png")), full_page=True)
    page.close()

    db.session.expire_all()
    order = db.session.query(Order).order_by(Order.id.desc()).first()
    assert len(order.lines) == 2
    assert order.payments[-1].status is PaymentStatus.AUTHORISED
