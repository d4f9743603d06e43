"""The demo pharmacist verifies a prescription with an interaction warning, in real Chromium."""

from __future__ import annotations

from pathlib import Path

from pharmacy.models import Role
from pharmacy.services.auth import hash_password
from pharmacy.services.formulary import load_formulary
from pharmacy.services.prescriptions import receive_prescription
from tests.browser.conftest import screenshot_path
from tests.factories import UserFactory
from tests.pharmacy.fhir_factory import CLARITHROMYCIN_500, SIMVASTATIN_40, bundle


def test_pharmacist_records_a_decision_and_verifies(live_server: str, chromium_browser, db,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    load_formulary(db.session)
    UserFactory(email="pharmacist@example.com", role=Role.PHARMACIST,
                full_name="Priya Pharmacist", password_hash=hash_password("demo-pharmacist-1"))
    eps = UserFactory(role=Role.API_CLIENT)
    rx = receive_prescription(db.session, bundle(SIMVASTATIN_40, CLARITHROMYCIN_500),
                              actor=eps).prescription
    db.session.commit()

    page = chromium_browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{live_server}/login")
    page.get_by_label("E-mail").fill("pharmacist@example.com")
    page.get_by_label("Password").fill("demo-pharmacist-1")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Open the verification queue").click()
    page.get_by_role("link", name="Tess Testpatient").click()
    assert page.url.endswith(f"/pharmacist/prescriptions/{rx.id}")

    warning = page.locator('li.finding[data-rule="interaction"]')
    assert warning.count() >= 1
    assert "clarithromycin" in warning.first.inner_text().lower()
    page.screenshot(path=str(screenshot_path(tmp_path, "pharmacist-detail.png")), full_page=True)

    for box in page.locator("textarea[name^='decision-']").all():
        box.fill("Simvastatin paused for the 7-day clarithromycin course; patient told.")
    page.get_by_role("button", name="Verify prescription").click()
    assert page.locator("#rx-status").inner_text() == "verified"
    assert "Recorded your check." in page.content()
    page.close()
