"""Photo proof of delivery: checked by content, cleaned of metadata, size-limited, stored
outside the web root and served only to staff and the route's courier."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from pharmacy.errors import InvalidRequest, NotFound
from pharmacy.models import DeliveryAttempt, Order, Role
from pharmacy.services.photos import PhotoStore, PhotoTooLarge
from tests.delivery.test_courier import _login_courier, planned, png_data_url  # noqa: F401
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.helpers import csrf_token, web_login


def camera_jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    """A JPEG as a phone writes it: camera make, GPS position and a rotation in EXIF."""
    image = Image.new("RGB", size, "red")
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"
    exif[0x0112] = 6  # rotate 90° to display
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (53.0, 48.0, 0.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif)
    data = out.getvalue()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # GPS really is in there
    return data


def encoded(kind: str, mode: str = "RGB", size: tuple[int, int] = (20, 10)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, kind)
    return out.getvalue()


@pytest.fixture()
def store(tmp_path: Path) -> PhotoStore:
    return PhotoStore(tmp_path / "photos", 5_000_000)


def test_a_camera_jpeg_is_stored_upright_without_exif_or_gps(store: PhotoStore) -> None:
    name = store.save(camera_jpeg())
    path = store.path(name)
    assert path.parent == store.directory and path.suffix == ".jpg"
    assert len(path.stem) == 32 and int(path.stem, 16) >= 0  # a random id, not the upload's name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    assert b"SpyCam" not in data and b"Exif" not in data
    with Image.open(path) as cleaned:
        assert cleaned.format == "JPEG"
        assert not cleaned.getexif() and not cleaned.getexif().get_ifd(0x8825)
        assert cleaned.size == (48, 64)  # turned upright before the rotation tag was dropped


@pytest.mark.parametrize("kind,suffix", [("PNG", ".png"), ("WEBP", ".webp")])
def test_png_and_webp_keep_their_format(store: PhotoStore, kind: str, suffix: str) -> None:
    name = store.save(encoded(kind, "RGBA"))
    assert name.endswith(suffix)
    with Image.open(store.path(name)) as image:
        assert image.format == kind and image.size == (20, 10)


def test_big_photos_are_shrunk(store: PhotoStore) -> None:
    name = store.save(encoded("JPEG", size=(4000, 3000)))
    with Image.open(store.path(name)) as image:
        assert max(image.size) == 2560


@pytest.mark.parametrize("data", [
    b"<?php system($_GET['c']); ?>",               # a script named photo.jpg
    b"GIF89a" + b"\x00" * 40,                       # a GIF header: not an allowed type
    encoded("GIF", "P"),                            # a real GIF
    encoded("BMP"),                                 # a real BMP
    camera_jpeg()[:200],                            # a truncated JPEG
    b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
])
def test_anything_but_a_whole_jpeg_png_or_webp_is_refused(store: PhotoStore, data: bytes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        store.save(data)
    assert refused.value.errors[0]["field"] == "photo"
    assert not store.directory.exists() or not any(store.directory.iterdir())


def test_too_many_pixels_is_refused_before_decoding(store: PhotoStore) -> None:
    # A tiny PNG declaring 10000 x 10000 pixels: a decompression bomb.
    bomb = encoded("PNG", "1", size=(10_000, 10_000))
    assert len(bomb) < 100_000
    with pytest.raises(InvalidRequest, match="too many pixels"):
        store.save(bomb)


def test_size_is_limited(tmp_path: Path) -> None:
    small = PhotoStore(tmp_path, 1_000)
    with pytest.raises(PhotoTooLarge) as refused:
        small.save(encoded("JPEG", size=(200, 200)) + b"\x00" * 2_000)
    assert refused.value.status == 413


@pytest.mark.parametrize("name", ["../../etc/passwd", "a.jpg", "0" * 32 + ".svg",
                                  "0" * 32 + ".jpg"])
def test_only_names_it_made_and_still_has_are_served(store: PhotoStore, name: str) -> None:
    with pytest.raises(NotFound):
        store.path(name)


def test_the_default_store_is_under_instance_not_static(app) -> None:  # type: ignore[no-untyped-def]
    default = PhotoStore.from_settings({**app.config, "DELIVERY_PHOTO_DIR": ""},
                                       app.instance_path)
    assert default.directory == Path(app.instance_path) / "delivery-photos"
    assert Path(app.static_folder) not in default.directory.parents  # type: ignore[arg-type]


def _deliver(client, stop_id: int, token: str, photo: bytes | None, filename: str = "x.jpg",  # type: ignore[no-untyped-def]
             client_action_id: str = "photo-1"):
    data = {"csrf_token": token, "action": "delivered", "client_action_id": client_action_id,
            "recipient_name": "Pat Doe", "signature": png_data_url()}
    if photo is not None:
        data["photo"] = (io.BytesIO(photo), filename, "image/jpeg")
    return client.post(f"/courier/stops/{stop_id}/actions", data=data,
                       content_type="multipart/form-data")


def _plain_stop(db, route):  # type: ignore[no-untyped-def]
    return next(s for s in route.stops if not any(
        line.medicine.cd_schedule for line in db.session.get(Order, s.order_id).lines))


def test_a_delivery_with_a_photo_is_served_to_staff_and_its_courier_only(
        app, client, db, planned) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    mine, theirs = planned[0], planned[1]
    _login_courier(client, db, mine)
    token = csrf_token(client, f"/courier/routes/{mine.id}")
    client.post(f"/courier/routes/{mine.id}/start", data={"csrf_token": token})
    stop = _plain_stop(db, mine)
    store = PhotoStore.from_settings(app.config, app.instance_path)
    before = set(store.directory.iterdir()) if store.directory.exists() else set()
    response = _deliver(client, stop.id, token, camera_jpeg(), filename="IMG_0001.JPG")
    assert response.status_code == 200, response.get_json()
    attempt = db.session.scalar(select(DeliveryAttempt).where(
        DeliveryAttempt.stop_id == stop.id))
    assert attempt.photo_path and "IMG" not in attempt.photo_path
    assert b"SpyCam" not in store.path(attempt.photo_path).read_bytes()
    # A resend of the same action (the phone's queue) stores nothing more.
    assert _deliver(client, stop.id, token, camera_jpeg()).status_code == 200
    assert set(store.directory.iterdir()) - before == {store.path(attempt.photo_path)}

    url = f"/delivery-photos/{attempt.id}"
    served = client.get(url)
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    assert served.headers["Cache-Control"] == "private, no-store"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert Image.open(io.BytesIO(served.data)).format == "JPEG"
    assert f'href="{url}"' in client.get(f"/courier/stops/{stop.id}").get_data(as_text=True)

    other = app.test_client()
    _login_courier(other, db, theirs)
    assert other.get(url).status_code == 404  # another courier: not even "it exists"
    assert app.test_client().get(url).status_code == 302  # anonymous: sign in
    for role, expected in ((Role.PATIENT, 403), (Role.PHARMACIST, 200), (Role.ADMIN, 200)):
        user = UserFactory(role=role)
        db.session.commit()
        viewer = app.test_client()
        web_login(viewer, user.email, DEFAULT_PASSWORD)
        assert viewer.get(url).status_code == expected, role
    assert app.static_folder and not any(Path(app.static_folder).rglob(attempt.photo_path))


def test_photos_past_retention_and_unreferenced_files_are_deleted_by_the_nightly_job(  # type: ignore[no-untyped-def]
        app, client, db, planned) -> None:  # noqa: F811
    import os
    import secrets
    import time
    from datetime import timedelta

    from pharmacy.jobs.deliveries import expire_delivery_photos
    from pharmacy.models import AuditEvent

    route = planned[0]
    _login_courier(client, db, route)
    token = csrf_token(client, f"/courier/routes/{route.id}")
    client.post(f"/courier/routes/{route.id}/start", data={"csrf_token": token})
    stop = _plain_stop(db, route)
    assert _deliver(client, stop.id, token, camera_jpeg()).status_code == 200
    attempt = db.session.scalar(select(DeliveryAttempt).where(
        DeliveryAttempt.stop_id == stop.id))
    store = PhotoStore.from_settings(app.config, app.instance_path)
    photo = store.path(attempt.photo_path)
    stale, fresh = (store.directory / f"{secrets.token_hex(16)}.jpg" for _ in range(2))
    for orphan in (stale, fresh):  # uploads whose records were never committed
        orphan.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86_400
    os.utime(stale, (two_days_ago, two_days_ago))
    os.utime(photo, (two_days_ago, two_days_ago))  # referenced: kept while in retention

    assert expire_delivery_photos() == 1  # only the stale orphan
    assert photo.exists() and fresh.exists() and not stale.exists()

    days = app.config["DELIVERY_PHOTO_RETENTION_DAYS"]
    attempt.attempted_at -= timedelta(days=days, minutes=1)
    db.session.commit()
    assert expire_delivery_photos() == 1
    assert not photo.exists() and fresh.exists()
    db.session.expire_all()
    attempt = db.session.get(DeliveryAttempt, attempt.id)
    assert attempt.photo_path is None and attempt.recipient_name == "Pat Doe"
    event = db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "delivery.photo_deleted"))
    assert event.entity_id == str(attempt.id) and event.reason == f"kept {days} days"
    assert client.get(f"/delivery-photos/{attempt.id}").status_code == 404
    assert expire_delivery_photos() == 0  # run again: nothing left to do


def test_bad_or_oversized_photos_are_clear_4xx_and_record_nothing(
        app, client, db, planned, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    route = planned[0]
    _login_courier(client, db, route)
    token = csrf_token(client, f"/courier/routes/{route.id}")
    client.post(f"/courier/routes/{route.id}/start", data={"csrf_token": token})
    stop = _plain_stop(db, route)
    fake = _deliver(client, stop.id, token, b"not an image at all", client_action_id="p-1")
    assert fake.status_code == 422
    assert fake.get_json()["errors"][0]["field"] == "photo"

    monkeypatch.setitem(app.config, "DELIVERY_PHOTO_MAX_BYTES", 2_000)
    big = _deliver(client, stop.id, token, camera_jpeg((600, 600)) + b"\0" * 3_000,
                   client_action_id="p-2")
    assert big.status_code == 413 and big.get_json()["code"] == "photo_too_large"

    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 20_000)
    huge = _deliver(client, stop.id, token, b"\xff" * 30_000, client_action_id="p-3")
    assert huge.status_code == 413
    assert "too large" in huge.get_json()["error"]
    assert db.session.scalar(select(DeliveryAttempt).where(
        DeliveryAttempt.stop_id == stop.id)) is None
    # A photo only goes with a delivery.
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 6_000_000)
    failed = client.post(f"/courier/stops/{stop.id}/actions", content_type="multipart/form-data",
                         data={"csrf_token": token, "action": "failed", "client_action_id": "p-4",
                               "failure_reason": "no_answer",
                               "photo": (io.BytesIO(camera_jpeg()), "door.jpg")})
    assert failed.status_code == 422


def test_an_oversized_page_upload_gets_a_readable_page(app, client, db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 1_000)
    response = client.post("/login", data={"email": "x" * 2_000})
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True).lower()
