"""Patients' saved cards over the API (bearer token, patient role)."""

from __future__ import annotations

from sqlalchemy import select

from pharmacy.models import PatientProfile, Role
from pharmacy.services import payments
from tests.factories import DEFAULT_PASSWORD, PatientFactory, UserFactory
from tests.payments.conftest import VISA
from tests.pharmacy.helpers import api_token


def _auth(client, user) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_token(client, user.email, DEFAULT_PASSWORD)}"}


def test_cards_need_a_patient_token(db, client, api_client) -> None:
    assert api_client.get("/api/v1/me/cards").status_code == 401
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    response = api_client.get("/api/v1/me/cards", headers=_auth(client, pharmacist))
    assert response.status_code == 403 and response.mimetype == "application/problem+json"


def test_setup_intent_list_and_remove_cards(db, client, api_client, patient_user, make_order,
                                            card) -> None:
    user, patient = patient_user
    headers = _auth(client, user)
    assert api_client.get("/api/v1/me/cards", headers=headers).get_json() == []

    setup = api_client.post("/api/v1/me/cards/setup-intent", headers=headers)
    assert setup.status_code == 201
    assert setup.get_json()["client_secret"].startswith("seti_")
    db.session.expire_all()
    assert db.session.get(PatientProfile, patient.id).stripe_customer_id  # stored once

    order = make_order(patient=db.session.get(PatientProfile, patient.id))
    payments.authorise(db.session, order, payment_method=card(VISA), save_card=True)
    db.session.commit()
    [saved] = api_client.get("/api/v1/me/cards", headers=headers).get_json()
    assert {k: saved[k] for k in ("brand", "last4", "exp_month", "exp_year")} == {
        "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2031}

    other_user = UserFactory(role=Role.PATIENT)
    PatientFactory(user_id=other_user.id)
    db.session.commit()
    other = _auth(client, other_user)
    assert api_client.delete(f"/api/v1/me/cards/{saved['id']}", headers=other).status_code == 404
    assert api_client.delete(f"/api/v1/me/cards/{saved['id']}", headers=headers
                             ).status_code == 204
    assert api_client.get("/api/v1/me/cards", headers=headers).get_json() == []
    assert api_client.delete("/api/v1/me/cards/pm_nope", headers=headers).status_code == 404


def test_a_patient_without_a_stripe_customer_has_no_cards_and_makes_none(db, client,
                                                                         api_client) -> None:
    user = UserFactory(role=Role.PATIENT)
    patient = PatientFactory(user_id=user.id)
    db.session.commit()
    assert api_client.get("/api/v1/me/cards", headers=_auth(client, user)).get_json() == []
    db.session.expire_all()
    assert db.session.scalar(select(PatientProfile.stripe_customer_id)
                             .where(PatientProfile.id == patient.id)) is None
