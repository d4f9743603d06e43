"""The nightly expiry of verified prescriptions past their legal validity (PostgreSQL): a
Schedule 2 prescription after its 28 days, a repeat issue after its batch's 12 months; the
order waiting for it is cancelled and the patient told; a rerun changes nothing."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import func, select

from pharmacy.models import (
    AuditEvent,
    Notification,
    Order,
    OrderStatus,
    Prescription,
    PrescriptionItem,
    PrescriptionStatus,
)
from pharmacy.models.base import utcnow
from pharmacy.services import prescriptions as rx_service
from tests.pharmacy.fhir_factory import METHADONE_CD2, bundle
from tests.pharmacy.test_orders_api import _address, _auth, _slot, world  # noqa: F401
from tests.pharmacy.test_rx_supply_rules import _receive, people  # noqa: F401


def test_a_schedule_2_prescription_expires_the_night_after_its_28_days(  # type: ignore[no-untyped-def]
        client, db, people) -> None:  # noqa: F811
    rx = _receive(client, db, people, bundle(METHADONE_CD2,
                                             authored=date.today() - timedelta(days=20)))
    rx_service.verify(db.session, rx, people["ph1"],
                      {w.key: "checked" for w in rx_service.warnings_of(rx)})
    rx_service.second_check(db.session, rx, people["ph2"])
    db.session.commit()
    assert rx_service.expire_lapsed(db.session) == []  # day 20: still valid
    later = utcnow() + timedelta(days=10)
    assert rx_service.expire_lapsed(db.session, now=later) == [rx.id]
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Prescription, rx.id).status is PrescriptionStatus.EXPIRED
    event = db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "prescription.expired"))
    assert event.entity_id == str(rx.id) and "28 days" in event.reason
    assert rx_service.expire_lapsed(db.session, now=later) == []  # a rerun: nothing to do


def _second_issue(db, world, *, batch_written_days_ago: int) -> Prescription:  # type: ignore[no-untyped-def]  # noqa: F811
    """A verified second issue of the world's repeat batch, written that many days ago."""
    original = db.session.get(Prescription, world["rx_item"].prescription_id)
    original.issued_on = date.today() - timedelta(days=batch_written_days_ago)
    issue = Prescription(prescription_id="RX-1/2", patient_id=original.patient_id,
                         original_id=original.id, status=PrescriptionStatus.VERIFIED,
                         prescription_type="repeat", repeats_allowed=3, issue_number=2,
                         source_bundle={"resourceType": "Bundle"})
    issue.items.append(PrescriptionItem(line_id="1", medicine_id=world["rx_item"].medicine_id,
                                        medication_code="x", medication_display="Amlodipine",
                                        quantity=Decimal(28), supply_duration_days=28))
    db.session.add(issue)
    db.session.commit()
    return issue


def test_a_repeat_issue_expires_with_its_batch_and_its_waiting_order_is_cancelled(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    issue = _second_issue(db, world, batch_written_days_ago=300)
    headers = _auth(client, world["patient"])
    placed = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": issue.items[0].id}],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, headers)},
        headers=headers)
    assert placed.status_code == 201, placed.get_json()
    assert rx_service.expire_lapsed(db.session) == []  # the batch has months to run

    in_14_months = utcnow() + timedelta(days=120)
    assert "12 months" in rx_service.lapsed(db.session, issue, now=in_14_months)
    assert rx_service.expire_lapsed(db.session, now=in_14_months) == [issue.id]
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Prescription, issue.id).status is PrescriptionStatus.EXPIRED
    order = db.session.get(Order, placed.get_json()["id"])
    assert order.status is OrderStatus.CANCELLED and "expired" in order.cancel_reason
    assert db.session.scalar(select(func.count(Notification.id)).where(
        Notification.kind == "prescription.expired")) == 1


def test_the_nightly_job_expires_what_has_lapsed_and_a_rerun_changes_nothing(  # type: ignore[no-untyped-def]
        app, client, db, people) -> None:  # noqa: F811
    from pharmacy.jobs.orders import expire_lapsed_prescriptions

    rx = _receive(client, db, people, bundle(METHADONE_CD2,
                                             authored=date.today() - timedelta(days=20)))
    rx_service.verify(db.session, rx, people["ph1"],
                      {w.key: "checked" for w in rx_service.warnings_of(rx)})
    rx_service.second_check(db.session, rx, people["ph2"])
    ids = [rx.id]
    db.session.commit()
    assert expire_lapsed_prescriptions() == 0  # day 20: nothing has lapsed
    for rx_id in ids:  # as if written 40 days ago
        rx = db.session.get(Prescription, rx_id)
        document = dict(rx.source_bundle)
        text = json.dumps(document).replace(str(date.today() - timedelta(days=20)),
                                            str(date.today() - timedelta(days=40)))
        rx.source_bundle = json.loads(text)
    db.session.commit()
    assert expire_lapsed_prescriptions() == 1
    db.session.expire_all()
    assert {db.session.get(Prescription, i).status for i in ids} == {PrescriptionStatus.EXPIRED}
    assert expire_lapsed_prescriptions() == 0


def test_what_is_owed_on_a_lapsed_dispensed_prescription_ends_and_its_order_is_cancelled(  # type: ignore[no-untyped-def]
        client, db, world, monkeypatch) -> None:  # noqa: F811
    from tests.pharmacy.test_owings import _delivered_short, _place

    item_id = _delivered_short(client, db, world)
    waiting = _place(client, db, world, item_id)
    assert waiting.status_code == 201  # the 8 owed, ordered
    rx_id = db.session.get(PrescriptionItem, item_id).prescription_id
    monkeypatch.setattr(rx_service, "lapsed", lambda session, rx, now=None: (
        "It has run out." if rx.id == rx_id else None))
    assert rx_service.expire_lapsed(db.session) == [rx_id]
    db.session.commit()
    db.session.expire_all()
    item = db.session.get(PrescriptionItem, item_id)
    assert item.quantity_owed == 0
    assert item.prescription.status is PrescriptionStatus.DISPENSED  # what was supplied stands
    assert db.session.get(Order, waiting.get_json()["id"]).status is OrderStatus.CANCELLED


def test_a_one_off_prescription_past_its_validity_is_not_offered_or_taken_before_the_nightly_run(  # type: ignore[no-untyped-def]
        client, db, people) -> None:  # noqa: F811
    """The nightly expiry marks only checked prescriptions: one still awaiting its check
    when its 28 days run out must not be offered to the patient, nor taken at checkout."""
    import pytest

    from pharmacy.errors import InvalidRequest
    from pharmacy.services import basket, orders

    rx = _receive(client, db, people, bundle(METHADONE_CD2,
                                             authored=date.today() - timedelta(days=20)))
    assert rx.status is PrescriptionStatus.AWAITING_VERIFICATION
    item = rx.items[0]
    listed = [r for r in basket.my_medicines(db.session, rx.patient, date.today())
              if r.item.id == item.id]
    assert listed and listed[0].one_off and listed[0].orderable_now
    # Time passes (the stored bundle is the one a later day would re-validate).
    aged = json.loads(json.dumps(rx.source_bundle))
    for entry in aged["entry"]:
        if entry["resource"]["resourceType"] == "MedicationRequest":
            entry["resource"]["authoredOn"] = (date.today() - timedelta(days=40)).isoformat()
    rx.source_bundle = aged
    db.session.commit()
    assert rx_service.lapsed(db.session, rx)
    assert not [r for r in basket.my_medicines(db.session, rx.patient, date.today())
                if r.item.id == item.id]
    with pytest.raises(InvalidRequest) as refused:
        orders._build_lines(db.session, rx.patient,
                            [orders.LineRequest(prescription_item_id=item.id)], orders.Pricing())
    assert "can no longer be supplied" in json.dumps(refused.value.errors)


def test_one_still_waiting_for_its_check_expires_too_and_leaves_the_queue(  # type: ignore[no-untyped-def]
        client, db, people) -> None:  # noqa: F811
    rx = _receive(client, db, people, bundle(METHADONE_CD2,
                                             authored=date.today() - timedelta(days=20)))
    assert rx.status is PrescriptionStatus.AWAITING_VERIFICATION
    later = utcnow() + timedelta(days=10)  # day 30: past the 28 days
    assert rx_service.expire_lapsed(db.session, now=later) == [rx.id]
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Prescription, rx.id).status is PrescriptionStatus.EXPIRED
    assert rx.id not in [p.id for p in rx_service.verification_queue(db.session)]
    event = db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "prescription.expired"))
    assert event.before == {"status": "awaiting_verification"}


def test_a_repeat_issue_whose_batch_has_lapsed_is_not_offered_before_the_nightly_run(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    from pharmacy.services import basket

    original = db.session.get(Prescription, world["rx_item"].prescription_id)
    original.status = PrescriptionStatus.DISPENSED
    original.dispensed_at = utcnow() - timedelta(days=20)
    issue = _second_issue(db, world, batch_written_days_ago=200)
    patient = db.session.get(Prescription, issue.id).patient

    def offered() -> bool:
        db.session.expire_all()
        return any(r.orderable_now for r in basket.my_medicines(db.session, patient,
                                                                 date.today())
                   if r.item.prescription_id == issue.id)

    assert offered()
    original = db.session.get(Prescription, original.id)
    original.issued_on = date.today() - timedelta(days=400)  # the batch's 12 months are up
    db.session.commit()
    assert not offered()
