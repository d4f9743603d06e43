"""Numbers typed into pages are ASCII digits: '²' passes str.isdigit() but int() refuses it."""

from __future__ import annotations

from pharmacy.models import Role
from pharmacy.web.forms import whole_number
from tests.factories import DEFAULT_PASSWORD, PatientFactory, PharmacyFactory, UserFactory
from tests.pharmacy.helpers import web_login


def test_whole_number_takes_ascii_digits_only() -> None:
    assert whole_number("42") == 42 and whole_number("0") == 0
    for raw in ("²", "٣", "1²", "", "-1", "1.5", " 4", "x"):
        assert whole_number(raw) is None, raw
    assert whole_number("1" * 5000) is None
    assert whole_number("12345", digits=4) is None


def test_pages_answer_unicode_digits_without_a_500(app, db) -> None:  # type: ignore[no-untyped-def]
    pharmacy = PharmacyFactory()
    admin = UserFactory(role=Role.ADMIN)
    pharmacist = UserFactory(role=Role.PHARMACIST)
    patient_user = UserFactory(role=Role.PATIENT)
    PatientFactory(user_id=patient_user.id, nominated_pharmacy_id=pharmacy.id)
    db.session.commit()
    for user, path in ((admin, "/admin/audit?page=²"),
                       (patient_user, "/patient/dose-calendar?days=²"),
                       (pharmacist, "/pharmacist/stock?days=²")):
        client = app.test_client()
        web_login(client, user.email, DEFAULT_PASSWORD)
        assert client.get(path).status_code < 500, path
