"""An admin turns on two-step sign-in from the QR page and signs in with a code, in Chromium."""

from __future__ import annotations

import time
from pathlib import Path

import pyotp

from pharmacy.models import Role
from tests.browser.conftest import screenshot_path
from tests.factories import DEFAULT_PASSWORD, UserFactory


def _code(secret: str, offset: int) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(time.time()) + offset)


def _sign_in(page, base: str, email: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_admin_enrols_and_signs_in_with_a_code(live_server: str, chromium_browser, db,  # type: ignore[no-untyped-def]
                                               tmp_path: Path) -> None:
    admin = UserFactory(role=Role.ADMIN, full_name="Ada Admin")
    db.session.commit()
    page = chromium_browser.new_page(viewport={"width": 420, "height": 900})
    _sign_in(page, live_server, admin.email)
    page.get_by_role("link", name="Two-step sign-in").click()
    page.get_by_role("button", name="Set up two-step sign-in").click()
    qr = page.locator("figure.qr svg")
    assert qr.is_visible() and qr.bounding_box()["width"] > 100  # type: ignore[index]
    page.screenshot(path=str(screenshot_path(tmp_path, "totp-enrolment.png")), full_page=True)
    secret = page.locator("#totp-secret").inner_text()
    page.get_by_label("Code from the app").fill(_code(secret, -1))
    page.get_by_role("button", name="Turn on").click()
    assert "Two-step sign-in is on" in page.content()
    codes = page.locator("#recovery-codes code").all_inner_texts()
    assert len(codes) == 10
    page.screenshot(path=str(screenshot_path(tmp_path, "totp-recovery-codes.png")),
                    full_page=True)
    page.get_by_role("link", name="I have saved them").click()
    assert "10 of 10" in page.locator("#recovery-codes-left").inner_text()
    page.get_by_role("button", name="Sign out").click()

    _sign_in(page, live_server, admin.email)
    assert page.url.endswith("/login/code")
    page.get_by_label("Code").fill("000000")
    page.get_by_role("button", name="Sign in").click()
    assert "That code is not right" in page.content()
    page.get_by_label("Code").fill(_code(secret, 0))
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/admin/")
    assert "Ada Admin" in page.content()
    page.get_by_role("button", name="Sign out").click()

    # The phone is lost: a recovery code, copied with spaces, stands in for the app once.
    _sign_in(page, live_server, admin.email)
    assert "recovery codes" in page.content()
    page.get_by_label("Code").fill(codes[0].replace("-", " "))
    page.get_by_role("button", name="Sign in").click()
    assert page.url.endswith("/admin/")
    page.get_by_role("link", name="Two-step sign-in").click()
    assert "9 of 10" in page.locator("#recovery-codes-left").inner_text()
    page.close()
