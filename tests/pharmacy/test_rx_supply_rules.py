"""What a prescription allows at supply time, on PostgreSQL: only verified, unexpired
prescriptions leave for picking, on a pharmacist's say; a packed prescription is dispensed
and cannot be ordered again; a repeat issue carries only the items whose repeats reach it."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from pharmacy.errors import DomainError
from pharmacy.models import (
    AuditEvent,
    Order,
    OrderStatus,
    Prescription,
    PrescriptionStatus,
    Role,
)
from pharmacy.models.base import utcnow
from pharmacy.services import orders
from pharmacy.services import prescriptions as rx_service
from pharmacy.services.formulary import load_formulary
from tests.factories import UserFactory
from tests.pharmacy.fhir_factory import AMLODIPINE_5, METHADONE_CD2, SIMVASTATIN_40, Item, bundle
from tests.pharmacy.test_orders_api import _address, _auth, _slot, world  # noqa: F401

FHIR = "application/fhir+json"


def _order_for(client, db, world, status: OrderStatus) -> Order:  # type: ignore[no-untyped-def]  # noqa: F811
    headers = _auth(client, world["patient"])
    placed = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": world["rx_item"].id}],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, headers)},
        headers=headers)
    assert placed.status_code == 201, placed.get_json()
    db.session.expire_all()
    order = db.session.get(Order, placed.get_json()["id"])
    order.status = status  # paid for; the payment flow is tested elsewhere
    db.session.commit()
    return order


def test_rejecting_a_prescription_cancels_the_order_waiting_for_it(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    from pharmacy.models import Notification, StockBatch

    rx = world["rx_item"].prescription
    rx.status = PrescriptionStatus.AWAITING_VERIFICATION
    db.session.commit()
    order = _order_for(client, db, world, OrderStatus.AWAITING_VERIFICATION)
    batch_id = order.lines[0].allocations[0].batch_id
    assert db.session.get(StockBatch, batch_id).quantity_reserved == 28
    rx_service.reject(db.session, rx, world["pharmacist"], "dose not clear")
    db.session.commit()
    db.session.expire_all()
    order = db.session.get(Order, order.id)
    assert order.status is OrderStatus.CANCELLED
    assert order.cancel_reason == "prescription rejected: dose not clear"
    assert db.session.get(StockBatch, batch_id).quantity_reserved == 0
    notice = db.session.scalar(select(Notification).where(
        Notification.kind == "prescription.rejected"))
    assert "has been cancelled" in notice.body


def test_an_order_whose_prescription_is_on_hold_is_never_released_or_packed(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    rx = world["rx_item"].prescription
    rx.status = PrescriptionStatus.AWAITING_VERIFICATION
    db.session.commit()
    order = _order_for(client, db, world, OrderStatus.AWAITING_VERIFICATION)
    rx_service.query(db.session, rx, world["pharmacist"], "Is 10mg meant?")
    db.session.commit()

    with pytest.raises(DomainError, match="its prescription is queried, not verified"):
        orders.advance(db.session, order, OrderStatus.READY_TO_PICK, actor=world["pharmacist"])
    db.session.rollback()
    admin = UserFactory(role=Role.ADMIN)
    with pytest.raises(DomainError, match="Only a pharmacist releases"):
        orders.advance(db.session, order, OrderStatus.READY_TO_PICK, actor=admin)
    db.session.rollback()
    order = db.session.get(Order, order.id)
    order.status = OrderStatus.READY_TO_PICK  # however it got there, it is not packed
    db.session.commit()
    with pytest.raises(DomainError, match="cannot be picked"):
        orders.pack(db.session, order, actor=world["pharmacist"])
    db.session.rollback()
    assert db.session.get(Order, order.id).status is OrderStatus.READY_TO_PICK


def test_a_packed_prescription_is_dispensed_and_cannot_be_ordered_again(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    order = _order_for(client, db, world, OrderStatus.READY_TO_PICK)
    orders.pack(db.session, order, actor=world["pharmacist"])
    db.session.commit()
    rx = db.session.get(Prescription, world["rx_item"].prescription_id)
    assert rx.status is PrescriptionStatus.DISPENSED and rx.dispensed_at is not None
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "prescription.dispensed", AuditEvent.entity_id == str(rx.id)))
    headers = _auth(client, world["patient"])
    again = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": world["rx_item"].id}],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, headers)},
        headers=headers)
    assert again.status_code == 422
    assert "dispensed and cannot be ordered" in again.get_json()["errors"][0]["message"]


@pytest.fixture()
def people(client, db):  # type: ignore[no-untyped-def]
    from tests.factories import DEFAULT_PASSWORD
    from tests.pharmacy.helpers import api_token

    load_formulary(db.session)
    eps = UserFactory(role=Role.API_CLIENT)
    ph1, ph2 = UserFactory(role=Role.PHARMACIST), UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    return {"eps": {"Authorization": f"Bearer {api_token(client, eps.email, DEFAULT_PASSWORD)}"},
            "ph1": ph1, "ph2": ph2}


def _receive(client, db, people, document) -> Prescription:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/prescriptions", data=json.dumps(document),
                           content_type=FHIR, headers=people["eps"])
    assert response.status_code == 201, response.get_json()
    return db.session.get(Prescription, response.get_json()["id"])


def test_a_schedule_2_prescription_past_its_28_days_is_not_verified_or_dispensed(  # type: ignore[no-untyped-def]
        client, db, people) -> None:
    rx = _receive(client, db, people, bundle(METHADONE_CD2,
                                             authored=date.today() - timedelta(days=20)))
    assert rx.status is PrescriptionStatus.AWAITING_VERIFICATION
    later = utcnow() + timedelta(days=10)  # day 30: past the 28 days
    decisions = {w.key: "checked" for w in rx_service.warnings_of(rx)}
    with pytest.raises(DomainError, match="can no longer be supplied.*28 days"):
        rx_service.verify(db.session, rx, people["ph1"], decisions, now=later)
    db.session.rollback()
    rx = db.session.get(Prescription, rx.id)
    rx_service.verify(db.session, rx, people["ph1"], decisions)  # today it is still valid
    rx_service.second_check(db.session, rx, people["ph2"])
    db.session.commit()
    assert rx.status is PrescriptionStatus.VERIFIED
    with pytest.raises(DomainError, match="can no longer be supplied"):
        rx_service.mark_dispensed(db.session, rx, people["ph1"], now=later)
    db.session.rollback()
    assert rx_service.lapsed(db.session, db.session.get(Prescription, rx.id)) is None


def test_a_repeat_issue_carries_only_the_items_whose_repeats_reach_it(  # type: ignore[no-untyped-def]
        client, db, people) -> None:
    from pharmacy.models import PatientProfile

    repeating = Item(AMLODIPINE_5.code, AMLODIPINE_5.display, 28, repeats=2)
    rx = _receive(client, db, people, bundle(repeating, SIMVASTATIN_40,
                                             course="continuous-repeat-dispensing"))
    rx_service.verify(db.session, rx, people["ph1"],
                      {w.key: "checked" for w in rx_service.warnings_of(rx)})
    rx_service.mark_dispensed(db.session, rx, people["ph1"],
                              now=utcnow() - timedelta(days=25))
    db.session.commit()
    amlodipine = next(i for i in rx.items if i.repeats_allowed == 2)
    simvastatin = next(i for i in rx.items if i.repeats_allowed == 0)
    today = date.today()
    assert "one-off" in rx_service.repeat_status(db.session, simvastatin, today).reason
    assert rx_service.repeat_status(db.session, amlodipine, today).can_order
    patient = db.session.get(PatientProfile, rx.patient_id)
    status, issue = rx_service.request_repeat(db.session, patient, amlodipine.id,
                                              actor=people["ph1"])
    db.session.commit()
    assert issue is not None and issue.issue_number == 2
    assert [i.medication_display for i in issue.items] == [AMLODIPINE_5.display]
    assert status.remaining == 2


def test_a_verified_prescription_is_withdrawn_and_its_waiting_order_cancelled(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    from pharmacy.models import Notification, PrescriptionReview
    from tests.factories import DEFAULT_PASSWORD
    from tests.pharmacy.helpers import api_token

    order = _order_for(client, db, world, OrderStatus.READY_TO_PICK)
    rx_id = world["rx_item"].prescription_id
    staff = {"Authorization": "Bearer " + api_token(client, world["pharmacist"].email,
                                                    DEFAULT_PASSWORD)}
    url = f"/api/v1/prescriptions/{rx_id}/withdrawal"
    assert client.post(url, json={"reason": " "}, headers=staff).status_code == 422
    done = client.post(url, json={"reason": "GP stopped amlodipine: ankle swelling"},
                       headers=staff)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "cancelled"
    db.session.expire_all()
    assert db.session.get(Order, order.id).status is OrderStatus.CANCELLED
    review = db.session.scalar(select(PrescriptionReview).where(
        PrescriptionReview.prescription_id == rx_id))
    assert review.action.value == "withdrawn" and "ankle" in review.reason
    assert db.session.scalar(select(Notification).where(
        Notification.kind == "prescription.withdrawn"))
    again = client.post(url, json={"reason": "twice"}, headers=staff)
    assert again.status_code == 409  # a cancelled prescription stays cancelled


def test_a_repeat_is_not_issued_after_the_prescribers_validity_end(  # type: ignore[no-untyped-def]
        client, db, people) -> None:
    repeating = Item(AMLODIPINE_5.code, AMLODIPINE_5.display, 28, repeats=3)
    document = bundle(repeating, course="continuous-repeat-dispensing")
    ends = date.today() + timedelta(days=40)
    request = next(e["resource"] for e in document["entry"]
                   if e["resource"]["resourceType"] == "MedicationRequest")
    request["dispenseRequest"]["validityPeriod"] = {"start": date.today().isoformat(),
                                                    "end": ends.isoformat()}
    rx = _receive(client, db, people, document)
    rx_service.verify(db.session, rx, people["ph1"],
                      {w.key: "checked" for w in rx_service.warnings_of(rx)})
    rx_service.mark_dispensed(db.session, rx, people["ph1"])
    db.session.commit()
    item = rx.items[0]
    assert rx_service.repeat_status(db.session, item, ends - timedelta(days=1)).can_order
    late = rx_service.repeat_status(db.session, item, ends + timedelta(days=1))
    assert not late.can_order and "valid until" in late.reason


def test_intake_checks_the_pharmacys_own_record_of_the_patient(  # type: ignore[no-untyped-def]
        client, db, people) -> None:
    from pharmacy.models import Allergy
    from tests.pharmacy.fhir_factory import CLARITHROMYCIN_500

    nhs = "9434765919"
    first = _receive(client, db, people, bundle(SIMVASTATIN_40, nhs=nhs))
    db.session.add(Allergy(patient_id=first.patient_id, substance="clarithromycin",
                           recorded_at=utcnow()))
    db.session.commit()
    # The prescribing system sends neither the allergy nor the simvastatin.
    second = _receive(client, db, people, bundle(CLARITHROMYCIN_500, nhs=nhs))
    assert second.patient_id == first.patient_id
    rules = sorted({w.rule for w in rx_service.warnings_of(second)})
    assert rules == ["allergy", "interaction"]
    assert second.source_bundle == bundle_without_record(second)  # stored verbatim
    # The same medicine again is not a duplicate of itself.
    third = _receive(client, db, people, bundle(SIMVASTATIN_40, nhs=nhs))
    assert "duplicate-therapy" not in {w.rule for w in rx_service.warnings_of(third)}


def bundle_without_record(rx: Prescription) -> dict:  # type: ignore[type-arg]
    assert not any(str(e.get("fullUrl", "")).startswith("urn:pharmacy-record:")
                   for e in rx.source_bundle["entry"])
    return rx.source_bundle


def test_an_allergy_recorded_as_a_drug_class_flags_its_members(  # type: ignore[no-untyped-def]
        client, db, people) -> None:
    from pharmacy.models import Allergy
    from tests.pharmacy.fhir_factory import Item as RxItem

    nhs = "9434765919"
    first = _receive(client, db, people, bundle(AMLODIPINE_5, nhs=nhs))
    db.session.add(Allergy(patient_id=first.patient_id, substance="Penicillins",
                           recorded_at=utcnow()))
    db.session.commit()
    amoxicillin = RxItem("39732411000001106", "Amoxicillin 500mg capsules", 21, per_day=3,
                         supply_days=7)
    second = _receive(client, db, people, bundle(amoxicillin, nhs=nhs))
    assert [w.rule for w in rx_service.warnings_of(second)] == ["allergy"]
