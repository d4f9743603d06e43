"""The demo courier, on a phone, delivers one stop with a drawn signature and fails another."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from sqlalchemy import select

from pharmacy.models import Courier, DeliveryRoute, DeliveryStop, StopStatus, User
from pharmacy.services import delivery
from pharmacy.services.photos import PhotoStore
from tests.browser.conftest import screenshot_path
from tests.delivery.conftest import make_wave_orders
from tests.delivery.test_delivery_photos import camera_jpeg


def test_courier_delivers_with_a_signature_and_records_a_failure(
        live_server: str, chromium_browser, db, app, fast_routing, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.jobs.deliveries import plan_wave

    slot = make_wave_orders(db, 8, fridge_every=0)
    for user in db.session.scalars(select(User).where(User.email.like("courier_%@example.com")
                                                     | User.email.like("courier%@example.com"))):
        if user.email != "courier@example.com":
            user.is_active = False  # the demo courier is alone on shift today
    db.session.commit()
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    plan_wave(wave_id, 0)
    demo = db.session.scalar(select(Courier).join(User).where(
        User.email == "courier@example.com"))
    route = db.session.scalar(select(DeliveryRoute).where(DeliveryRoute.courier_id == demo.id))
    assert route is not None and len(route.stops) >= 2, "the demo courier needs two stops"
    route_id = route.id
    first, second = route.stops[0].id, route.stops[1].id

    page = chromium_browser.new_page(viewport={"width": 390, "height": 844})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(f"{live_server}/login")
    page.get_by_label("E-mail").fill("courier@example.com")
    page.get_by_label("Password").fill("demo-courier-1")
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server}/courier/routes/{route_id}")
    page.get_by_role("button", name="Start route").click()
    page.screenshot(path=str(screenshot_path(tmp_path, "courier-route.png")), full_page=True)

    page.goto(f"{live_server}/courier/stops/{first}")
    page.get_by_label("Recipient's name").fill("Alex Recipient")
    pad = page.locator("#signature-pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 80)
    page.mouse.down()
    for step in range(1, 12):
        page.mouse.move(box["x"] + 20 + step * 25, box["y"] + 80 + (-1) ** step * 30)
    page.mouse.up()
    page.screenshot(path=str(screenshot_path(tmp_path, "courier-signature.png")), full_page=True)
    # A photo of the parcel at the door, as the phone's camera takes it (with GPS in EXIF).
    page.get_by_label("Photo of the parcel at the door (optional)").set_input_files(files=[{
        "name": "IMG_0001.jpg", "mimeType": "image/jpeg", "buffer": camera_jpeg((2400, 1800))}])
    with page.expect_response(lambda r: "/actions" in r.url) as response_info:
        page.get_by_role("button", name="Confirm delivery").click()
    answer = response_info.value
    assert answer.status == 200, answer.text()
    try:
        page.wait_for_url(f"**/courier/routes/{route_id}", timeout=15_000)
    except Exception:
        raise AssertionError([page.url, page.content()[:300], errors]) from None

    page.goto(f"{live_server}/courier/stops/{second}")
    page.get_by_label("Reason").select_option("not_home")
    page.get_by_role("button", name="Record failed delivery").click()
    page.wait_for_url(f"**/courier/routes/{route_id}")
    page.close()

    db.session.expire_all()
    delivered = db.session.get(DeliveryStop, first)
    assert delivered.status is StopStatus.DELIVERED
    assert delivered.attempts[0].signature_svg.startswith("data:image/png;base64,")
    # courier.js shrank the photo to 1600 px before queueing it; the server stored it clean.
    store = PhotoStore.from_settings(app.config, app.instance_path)
    with Image.open(store.path(delivered.attempts[0].photo_path)) as photo:
        assert photo.format == "JPEG" and max(photo.size) == 1600 and not photo.getexif()
    assert db.session.get(DeliveryStop, second).status is StopStatus.FAILED


def test_leaflet_map_draws_the_route_even_when_no_tiles_load(
        live_server: str, chromium_browser, db, app, fast_routing, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.jobs.deliveries import plan_wave

    monkeypatch.setitem(app.config, "MAP_TILE_URL", "http://127.0.0.1:9/{z}/{x}/{y}.png")
    slot = make_wave_orders(db, 6, fridge_every=0)
    for user in db.session.scalars(select(User).where(User.email.like("courier%@example.com"))):
        if user.email != "courier@example.com":
            user.is_active = False
    db.session.commit()
    wave_id = delivery.close_wave(db.session, slot).id
    db.session.commit()
    plan_wave(wave_id, 0)
    route_id = db.session.scalar(select(DeliveryRoute.id).where(DeliveryRoute.wave_id == wave_id))
    page = chromium_browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{live_server}/login")
    page.get_by_label("E-mail").fill("courier@example.com")
    page.get_by_label("Password").fill("demo-courier-1")
    page.get_by_role("button", name="Sign in").click()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server}/courier/routes/{route_id}")
    try:
        page.wait_for_selector(".leaflet-container", timeout=10_000)
    except Exception:
        figure = page.locator("#route-map").evaluate("e => e.outerHTML")
        raise AssertionError([errors, figure[:500]]) from None
    assert page.locator("path.leaflet-interactive").count() >= 7  # the line and 6 stops
    assert page.locator(".leaflet-tooltip").count() == 6
    page.close()
