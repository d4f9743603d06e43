"""Prescriptions end to end through the HTTP API on PostgreSQL: validate, intake, decisions."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from pharmacy.models import (
    AuditEvent,
    Notification,
    PatientProfile,
    Prescription,
    PrescriptionReview,
    Role,
)
from pharmacy.models.base import utcnow
from pharmacy.services.formulary import load_formulary
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.pharmacy.fhir_factory import (
    AMLODIPINE_5,
    CLARITHROMYCIN_500,
    METHADONE_CD2,
    SIMVASTATIN_40,
    Item,
    bundle,
)
from tests.pharmacy.helpers import api_token

FHIR = "application/fhir+json"


@pytest.fixture()
def people(client, db):  # type: ignore[no-untyped-def]
    load_formulary(db.session)
    users = {
        "eps": UserFactory(role=Role.API_CLIENT),
        "ph1": UserFactory(role=Role.PHARMACIST),
        "ph2": UserFactory(role=Role.PHARMACIST),
        "patient": UserFactory(role=Role.PATIENT),
    }
    db.session.commit()
    return {k: {"Authorization": f"Bearer {api_token(client, u.email, DEFAULT_PASSWORD)}"}
            for k, u in users.items()}


def _codes(outcome: dict) -> list[str]:  # type: ignore[type-arg]
    return [i["details"]["coding"][0]["code"] for i in outcome["issue"]]


def _send(client, headers, document):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/prescriptions", data=json.dumps(document), content_type=FHIR,
                       headers=headers)


# --- $validate ---------------------------------------------------------------------------

def test_validate_answers_an_operation_outcome_and_stores_nothing(client, db, people) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/prescriptions/$validate", data=json.dumps(
        bundle(AMLODIPINE_5)), content_type=FHIR, headers=people["ph1"])
    assert response.status_code == 200
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert _codes(response.get_json()) == ["valid"]
    assert db.session.scalar(select(func.count(Prescription.id))) == 0


def test_validate_reports_every_finding(client, people) -> None:  # type: ignore[no-untyped-def]
    document = bundle(SIMVASTATIN_40, CLARITHROMYCIN_500, nhs="9434765918")  # bad check digit
    outcome = client.post("/api/v1/prescriptions/$validate", json=document,
                          headers=people["ph1"]).get_json()
    codes = _codes(outcome)
    assert "patient-identifier-invalid" in codes
    assert "interaction" in codes
    interaction = next(i for i in outcome["issue"]
                       if i["details"]["coding"][0]["code"] == "interaction")
    assert interaction["severity"] == "warning"
    assert "simvastatin" in interaction["diagnostics"].lower()
    assert "clarithromycin" in interaction["diagnostics"].lower()


@pytest.mark.parametrize("who,status", [("patient", 403), (None, 401)])
def test_validate_needs_a_pharmacist(client, people, who, status) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/prescriptions/$validate", json=bundle(AMLODIPINE_5),
                           headers=people[who] if who else {})
    assert response.status_code == status


def test_bad_input_is_a_clear_4xx_never_a_500(client, people) -> None:  # type: ignore[no-untyped-def]
    url = "/api/v1/prescriptions/$validate"
    not_json = client.post(url, data=b"this is not json {", content_type=FHIR,
                           headers=people["ph1"])
    assert not_json.status_code == 400
    assert _codes(not_json.get_json()) == ["bundle-invalid"]

    deep = "[" * 100_000 + "]" * 100_000
    nested = client.post(url, data=deep, content_type=FHIR, headers=people["ph1"])
    assert nested.status_code == 400
    assert "deep" in nested.get_json()["issue"][0]["diagnostics"]

    wrong_type = client.post(url, data=json.dumps(bundle(AMLODIPINE_5)),
                             content_type="text/plain", headers=people["ph1"])
    assert wrong_type.status_code == 415

    huge = bundle(AMLODIPINE_5)
    huge["entry"][0]["resource"]["name"][0]["family"] = "x" * 1_100_000
    too_big = client.post(url, data=json.dumps(huge), content_type=FHIR, headers=people["ph1"])
    assert too_big.status_code == 413

    for body in (b"null", b"[]", b"42", b'"Bundle"', b'{"resourceType": "Patient"}',
                 b'{"resourceType": "Bundle", "entry": "nope"}', b"\xff\xfe\x00"):
        response = client.post(url, data=body, content_type=FHIR, headers=people["ph1"])
        assert response.status_code in (200, 400), body
        assert response.get_json()["resourceType"] == "OperationOutcome"
        if response.status_code == 200:
            assert "bundle-invalid" in _codes(response.get_json())


# --- intake ------------------------------------------------------------------------------

def test_intake_stores_verbatim_queues_and_is_idempotent(client, db, people) -> None:  # type: ignore[no-untyped-def]
    document = bundle(AMLODIPINE_5)
    first = _send(client, people["eps"], document)
    assert first.status_code == 201, first.get_json()
    body = first.get_json()
    assert body["status"] == "awaiting_verification" and body["created"] is True
    again = _send(client, people["eps"], document)
    assert again.status_code == 200
    assert again.get_json()["id"] == body["id"] and again.get_json()["created"] is False
    assert db.session.scalar(select(func.count(Prescription.id))) == 1
    stored = db.session.get(Prescription, body["id"])
    assert stored.source_bundle == document
    assert stored.patient is not None and stored.patient.nhs_number == (
        document["entry"][0]["resource"]["identifier"][0]["value"])
    assert stored.prescriber is not None and stored.prescriber.registration_body == "GMC"

    changed = json.loads(json.dumps(document))
    changed["entry"][-1]["resource"]["dispenseRequest"]["quantity"]["value"] = 56
    assert _send(client, people["eps"], changed).status_code == 409


def test_a_second_prescription_for_the_same_nhs_number_links_the_same_patient(
        client, db, people) -> None:  # type: ignore[no-untyped-def]
    _send(client, people["eps"], bundle(AMLODIPINE_5, nhs="9434765919"))
    _send(client, people["eps"], bundle(SIMVASTATIN_40, nhs="9434765919"))
    assert db.session.scalar(select(func.count(PatientProfile.id))) == 1


def test_a_bundle_with_control_characters_is_refused_and_nothing_is_stored(
        client, db, people) -> None:  # type: ignore[no-untyped-def]
    document = bundle(AMLODIPINE_5)
    document["entry"][-1]["resource"]["note"] = [{"text": "take with food\u0000"}]
    response = _send(client, people["eps"], document)
    assert response.status_code == 400
    assert response.mimetype == "application/fhir+json"
    assert "control characters" in response.get_json()["issue"][0]["diagnostics"]
    assert db.session.scalar(select(func.count(Prescription.id))) == 0


def test_only_prescribing_systems_send_prescriptions(client, people) -> None:  # type: ignore[no-untyped-def]
    assert _send(client, people["ph1"], bundle(AMLODIPINE_5)).status_code == 403


def test_a_prescription_with_errors_is_rejected_with_its_outcome(client, db, people) -> None:  # type: ignore[no-untyped-def]
    response = _send(client, people["eps"], bundle(AMLODIPINE_5, nhs="9434765918"))
    assert response.status_code == 201
    body = response.get_json()
    assert body["status"] == "rejected"
    assert "patient-identifier-invalid" in _codes(body["outcome"])
    rx = db.session.get(Prescription, body["id"])
    assert rx.patient_id is None  # never create a patient from a bad NHS number
    # A rejected prescription cannot be dispensed.
    dispensed = client.post(f"/api/v1/prescriptions/{rx.id}/dispensing",
                            headers=people["ph1"])
    assert dispensed.status_code == 409
    assert dispensed.get_json()["code"] == "invalid_transition"


# --- the pharmacist's decisions --------------------------------------------------------

def test_every_warning_needs_a_decision_and_reason_then_verify_and_dispense(
        client, db, people) -> None:  # type: ignore[no-untyped-def]
    rx_id = _send(client, people["eps"], bundle(SIMVASTATIN_40, CLARITHROMYCIN_500)).get_json()[
        "id"]
    detail = client.get(f"/api/v1/prescriptions/{rx_id}", headers=people["ph1"]).get_json()
    warnings = detail["warnings"]
    assert any(w["rule"] == "interaction" for w in warnings)

    refused = client.post(f"/api/v1/prescriptions/{rx_id}/verification", json={},
                          headers=people["ph1"])
    assert refused.status_code == 422
    assert {e["field"] for e in refused.get_json()["errors"]} == {
        f"decisions.{w['key']}" for w in warnings}

    decisions = {w["key"]: "Simvastatin paused during the 7-day course; patient told"
                 for w in warnings}
    verified = client.post(f"/api/v1/prescriptions/{rx_id}/verification",
                           json={"decisions": decisions}, headers=people["ph1"])
    assert verified.status_code == 200, verified.get_json()
    assert verified.get_json()["status"] == "verified"

    event = db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "prescription.verified"))
    assert "interaction" in event.after["overridden_rules"]
    assert event.actor_id is not None
    review = db.session.scalar(select(PrescriptionReview))
    assert review.warning_decisions[0]["reason"].startswith("Simvastatin paused")

    dispensed = client.post(f"/api/v1/prescriptions/{rx_id}/dispensing", headers=people["ph1"])
    assert dispensed.get_json()["status"] == "dispensed"


def test_schedule_2_needs_a_second_different_pharmacist(client, people) -> None:  # type: ignore[no-untyped-def]
    created = _send(client, people["eps"], bundle(METHADONE_CD2)).get_json()
    assert created["status"] == "awaiting_verification", created["outcome"]
    rx_id = created["id"]
    first = client.post(f"/api/v1/prescriptions/{rx_id}/verification", json={
        "decisions": {w["key"]: "checked" for w in client.get(
            f"/api/v1/prescriptions/{rx_id}", headers=people["ph1"]).get_json()["warnings"]}},
        headers=people["ph1"])
    assert first.get_json()["status"] == "awaiting_second_check"
    own = client.post(f"/api/v1/prescriptions/{rx_id}/second-check", json={},
                      headers=people["ph1"])
    assert own.status_code == 403
    assert client.post(f"/api/v1/prescriptions/{rx_id}/dispensing",
                       headers=people["ph1"]).status_code == 409
    second = client.post(f"/api/v1/prescriptions/{rx_id}/second-check", json={"note": "ok"},
                         headers=people["ph2"])
    assert second.get_json()["status"] == "verified"


def test_query_puts_on_hold_and_answer_requeues(client, db, people) -> None:  # type: ignore[no-untyped-def]
    rx_id = _send(client, people["eps"], bundle(AMLODIPINE_5)).get_json()["id"]
    assert client.post(f"/api/v1/prescriptions/{rx_id}/query", json={"question": ""},
                       headers=people["ph1"]).status_code == 422
    held = client.post(f"/api/v1/prescriptions/{rx_id}/query",
                       json={"question": "Is 5mg intended?"}, headers=people["ph1"])
    assert held.get_json()["status"] == "queried"
    assert client.post(f"/api/v1/prescriptions/{rx_id}/verification", json={},
                       headers=people["ph1"]).status_code == 409
    back = client.post(f"/api/v1/prescriptions/{rx_id}/query-answer",
                       json={"answer": "Yes, 5mg"}, headers=people["ph1"])
    assert back.get_json()["status"] == "awaiting_verification"
    queue = client.get("/api/v1/prescriptions", headers=people["ph1"]).get_json()
    assert [p["id"] for p in queue] == [rx_id]


def test_reject_needs_a_reason_and_tells_the_patient(client, db, people) -> None:  # type: ignore[no-untyped-def]
    rx_id = _send(client, people["eps"], bundle(AMLODIPINE_5)).get_json()["id"]
    assert client.post(f"/api/v1/prescriptions/{rx_id}/rejection", json={},
                       headers=people["ph1"]).status_code == 422
    done = client.post(f"/api/v1/prescriptions/{rx_id}/rejection",
                       json={"reason": "Duplicate of an earlier prescription"},
                       headers=people["ph1"])
    assert done.get_json()["status"] == "rejected"
    note = db.session.scalar(select(Notification))
    assert note.kind == "prescription.rejected"
    assert note.patient_id == db.session.get(Prescription, rx_id).patient_id


# --- repeats -------------------------------------------------------------------------------

def test_repeat_requests_follow_the_seven_day_rule_and_the_repeat_count(
        client, db, people) -> None:  # type: ignore[no-untyped-def]
    repeat_item = Item(AMLODIPINE_5.code, AMLODIPINE_5.display, 28, repeats=1)
    rx_id = _send(client, people["eps"], bundle(repeat_item, course="continuous-repeat-dispensing")
                  ).get_json()["id"]
    rx = db.session.get(Prescription, rx_id)
    patient_user = UserFactory(role=Role.PATIENT)
    rx.patient.user_id = patient_user.id
    db.session.commit()
    token = api_token(client, patient_user.email, DEFAULT_PASSWORD)
    headers = {"Authorization": f"Bearer {token}"}
    item_id = rx.items[0].id

    preparing = client.post("/api/v1/me/repeat-requests", json={"item_id": item_id},
                            headers=headers)
    assert preparing.status_code == 409  # first issue not dispensed yet
    client.post(f"/api/v1/prescriptions/{rx_id}/verification", json={"decisions": {}},
                headers=people["ph1"])
    client.post(f"/api/v1/prescriptions/{rx_id}/dispensing", headers=people["ph1"])

    too_early = client.post("/api/v1/me/repeat-requests", json={"item_id": item_id},
                            headers=headers)
    assert too_early.status_code == 409
    body = too_early.get_json()
    assert body["code"] == "repeat_not_available"
    expected = (utcnow() + timedelta(days=21)).date().isoformat()
    assert body["earliest_order_date"] == expected
    mine = client.get("/api/v1/me/medicines", headers=headers).get_json()
    assert mine[0]["can_order"] is False and mine[0]["earliest_order_date"] == expected

    db.session.expire_all()  # the requests changed it (and its version) meanwhile
    rx = db.session.get(Prescription, rx_id)
    rx.dispensed_at = rx.items[0].supplied_at = utcnow() - timedelta(days=22)
    db.session.commit()
    issued = client.post("/api/v1/me/repeat-requests", json={"item_id": item_id},
                         headers=headers)
    assert issued.status_code == 201, issued.get_json()
    assert issued.get_json()["issue_number"] == 2
    assert issued.get_json()["status"] == "awaiting_verification"
    # One repeat allowed: two issues in all, so no third.
    new_id = issued.get_json()["id"]
    client.post(f"/api/v1/prescriptions/{new_id}/verification", json={"decisions": {}},
                headers=people["ph1"])
    client.post(f"/api/v1/prescriptions/{new_id}/dispensing", headers=people["ph1"])
    again = client.post("/api/v1/me/repeat-requests", json={"item_id": item_id},
                        headers=headers)
    assert again.status_code == 409
    assert "All repeats" in again.get_json()["detail"]
    other = UserFactory(role=Role.PATIENT)
    db.session.commit()
    others = {"Authorization": f"Bearer {api_token(client, other.email, DEFAULT_PASSWORD)}"}
    assert client.post("/api/v1/me/repeat-requests", json={"item_id": item_id},
                       headers=others).status_code == 403  # no patient record


def test_a_patient_with_an_account_is_told_a_prescription_has_come(client, db, people) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import PatientFactory

    holder = UserFactory(role=Role.PATIENT)
    PatientFactory(nhs_number="9434765919", user_id=holder.id)
    db.session.commit()
    assert _send(client, people["eps"], bundle(AMLODIPINE_5, nhs="9434765919")).status_code \
        == 201
    note = db.session.scalar(select(Notification).where(
        Notification.kind == "prescription.received"))
    assert note is not None and note.user_id == holder.id
    assert "My medicines" in note.body and "mlodipine" not in note.body + note.subject
    # A record with no account yet gets no message (nobody could read it).
    queued = _send(client, people["eps"], bundle(SIMVASTATIN_40, nhs="9876543210"))
    assert queued.get_json()["status"] == "awaiting_verification"
    assert db.session.scalar(select(func.count(Notification.id)).where(
        Notification.kind == "prescription.received")) == 1
