"""Repeat items move on one by one, on PostgreSQL: an item supplied on a partly ordered
issue is due again from its own supply; a new issue carries only the items that are due;
withdrawing any issue of a repeat batch, a dispensed one included, stops the batch."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from pharmacy.models import (
    AuditEvent,
    Notification,
    Order,
    OrderStatus,
    PatientProfile,
    Prescription,
    PrescriptionItem,
    PrescriptionReview,
    PrescriptionStatus,
    Role,
    StockBatch,
)
from pharmacy.models.base import utcnow
from pharmacy.services import basket, notify, orders
from pharmacy.services import prescriptions as rx_service
from tests.factories import DEFAULT_PASSWORD, MedicineFactory, PatientFactory, UserFactory
from tests.pharmacy.helpers import api_token, web_login
from tests.pharmacy.test_orders_api import _address, _auth, _slot, world  # noqa: F401

LONDON = rx_service.LONDON


def _today() -> date:
    return utcnow().astimezone(LONDON).date()


def _batch(db, patient: PatientProfile, lines: list[tuple[int | None, int]], *,  # type: ignore[no-untyped-def]
           repeats: int = 3, status: PrescriptionStatus = PrescriptionStatus.VERIFIED,
           rx_id: str = "RX-BATCH") -> Prescription:
    """A verified repeat prescription (issue 1) with one item per (medicine id, supply days)."""
    rx = Prescription(prescription_id=rx_id, patient_id=patient.id, status=status,
                      prescription_type="repeat", repeats_allowed=repeats, issued_on=_today(),
                      source_bundle={"resourceType": "Bundle"})
    for n, (medicine_id, days) in enumerate(lines, start=1):
        rx.items.append(PrescriptionItem(
            line_id=f"line-{n}", medicine_id=medicine_id, medication_code=f"code-{n}",
            medication_display=f"Medicine {n}", quantity=Decimal(28), quantity_unit="tablet",
            supply_duration_days=days, repeats_allowed=repeats))
    db.session.add(rx)
    db.session.commit()
    return rx


def _order_and_pack(client, db, world, item_ids: list[int]) -> Order:  # type: ignore[no-untyped-def]  # noqa: F811
    headers = _auth(client, world["patient"])
    placed = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": i} for i in item_ids],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, headers)},
        headers=headers)
    assert placed.status_code == 201, placed.get_json()
    db.session.expire_all()
    order = db.session.get(Order, placed.get_json()["id"])
    order.status = OrderStatus.READY_TO_PICK  # paid for; the payment flow is tested elsewhere
    db.session.commit()
    orders.pack(db.session, order, actor=world["pharmacist"])
    db.session.commit()
    return order


def _two_item_batch(db, world, second: str) -> Prescription:  # type: ignore[no-untyped-def]  # noqa: F811
    """A 28-day repeat of the world's medicine and of ``second`` (stocked) for patient 0."""
    patient = world["patients"][0]
    other = MedicineFactory(name=second, pack_size=28)
    db.session.add(StockBatch(pharmacy_id=patient.nominated_pharmacy_id, medicine=other,
                              lot_number=f"L{other.code}", quantity_on_hand=500,
                              expiry_date=date.today() + timedelta(days=500)))
    return _batch(db, patient, [(world["rx_item"].medicine_id, 28), (other.id, 28)])


def test_an_item_supplied_on_a_partly_ordered_issue_is_due_from_its_own_supply(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    patient = world["patients"][0]
    rx = _two_item_batch(db, world, "Bendroflumethiazide 2.5mg tablets")
    a, b = rx.items
    today = _today()

    first = _order_and_pack(client, db, world, [a.id])  # only A is ordered
    first.status = OrderStatus.DELIVERED
    db.session.commit()
    db.session.expire_all()
    rx = db.session.get(Prescription, rx.id)
    a, b = rx.items
    assert rx.status is PrescriptionStatus.VERIFIED  # B is still to be ordered on it

    # A is not "on an order already" for ever: it shows when it can next be ordered.
    rows = {row.item.id: row for row in basket.my_medicines(db.session, patient, today)}
    assert not rows[a.id].on_order and not rows[a.id].orderable_now
    assert rows[a.id].repeat is not None
    assert rows[a.id].repeat.earliest == today + timedelta(days=21)
    assert rows[b.id].orderable_now
    assert a.supplied_at is not None and b.supplied_at is None
    assert db.session.scalar(select(AuditEvent).where(
        AuditEvent.action == "prescription.item_supplied", AuditEvent.entity_id == str(rx.id)))
    web_login(client, world["patient"].email, DEFAULT_PASSWORD)
    page = client.get("/patient/medicines").get_data(as_text=True)
    assert "On an order already" not in page
    assert f"{today + timedelta(days=21):%-d %B %Y}" in page

    # A cannot be ordered again on this issue; its next repeat comes on time, with a reminder.
    headers = _auth(client, world["patient"])
    again = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": a.id}], "address_id": _address(db, world["patient"]),
        "slot_id": _slot(client, headers)}, headers=headers)
    assert again.status_code == 422
    due_day = today + timedelta(days=21)
    assert rx_service.repeat_status(db.session, a, due_day).can_order
    assert notify.create_repeat_reminders(db.session, due_day) == 1
    db.session.commit()
    assert db.session.scalar(select(Notification.dedupe_key).where(
        Notification.kind == "repeat.due")) == notify.repeat_due_key(patient.id, due_day)

    # B ordered weeks later dispenses the issue, but A stays due from its own supply.
    a.supplied_at = utcnow() - timedelta(days=20)
    db.session.commit()
    _order_and_pack(client, db, world, [b.id])
    db.session.expire_all()
    rx = db.session.get(Prescription, rx.id)
    a, b = rx.items
    assert rx.status is PrescriptionStatus.DISPENSED
    assert rx.dispensed_at is not None and rx.dispensed_at > utcnow() - timedelta(hours=1)
    a_status = rx_service.repeat_status(db.session, a, today)
    assert a_status.earliest == (a.supplied_at.astimezone(LONDON).date()
                                 + timedelta(days=28 - 7))
    assert rx_service.repeat_status(db.session, b, today).earliest == today + timedelta(days=21)


def _dispense(db, rx: Prescription, pharmacist, when: datetime) -> None:  # type: ignore[no-untyped-def]
    if rx.status is PrescriptionStatus.AWAITING_VERIFICATION:
        rx_service.verify(db.session, rx, pharmacist, {})
    rx_service.mark_dispensed(db.session, rx, pharmacist, now=when)
    db.session.commit()


def test_a_new_issue_carries_only_the_items_that_are_due(db) -> None:  # type: ignore[no-untyped-def]
    pharmacist = UserFactory(role=Role.PHARMACIST)
    user = UserFactory(role=Role.PATIENT)
    patient = PatientFactory(user_id=user.id)
    rx = _batch(db, patient, [(None, 28), (None, 56)], repeats=3)
    monthly, two_monthly = rx.items
    start = utcnow() - timedelta(days=25)
    _dispense(db, rx, pharmacist, start)

    # Day 25: the 28-day item is due in 3 days; the 56-day one not for another month.
    status, second = rx_service.request_repeat(db.session, patient, monthly.id, actor=user)
    db.session.commit()
    assert second is not None and second.issue_number == 2
    assert [i.line_id for i in second.items] == [monthly.line_id]
    assert status.remaining == 3
    later = rx_service.repeat_status(db.session, two_monthly, _today())
    assert not later.can_order and later.remaining == 3  # its repeats are its own
    assert later.earliest == start.astimezone(LONDON).date() + timedelta(days=56 - 7)
    assert rx.repeats_issued == 1

    # Day 50: the monthly item (supplied on day 25) and the two-monthly one (due day 56,
    # inside the 7 days' lead) go together.
    _dispense(db, second, pharmacist, utcnow())
    day_50 = start + timedelta(days=50)
    _, third = rx_service.request_repeat(db.session, patient, second.items[0].id,
                                         actor=user, now=day_50)
    db.session.commit()
    assert third is not None and third.issue_number == 3
    assert sorted(i.line_id for i in third.items) == [monthly.line_id, two_monthly.line_id]
    assert rx.repeats_issued == 2
    remaining = {s.item.line_id: s.remaining for s in rx_service.my_medicines(
        db.session, patient, day_50.astimezone(LONDON).date())}
    assert remaining == {monthly.line_id: 1, two_monthly.line_id: 2}


def test_withdrawing_a_dispensed_issue_stops_the_repeat_batch(client, db) -> None:  # type: ignore[no-untyped-def]
    pharmacist = UserFactory(role=Role.PHARMACIST)
    user = UserFactory(role=Role.PATIENT)
    patient = PatientFactory(user_id=user.id)
    rx = _batch(db, patient, [(None, 28)], repeats=5)
    _dispense(db, rx, pharmacist, utcnow() - timedelta(days=30))
    item = rx.items[0]
    today = _today()
    assert rx_service.repeat_status(db.session, item, today).can_order
    _, second = rx_service.request_repeat(db.session, patient, item.id, actor=user)
    db.session.commit()
    assert second is not None

    staff = {"Authorization": "Bearer " + api_token(client, pharmacist.email, DEFAULT_PASSWORD)}
    done = client.post(f"/api/v1/prescriptions/{rx.id}/withdrawal",
                       json={"reason": "GP stopped it: renal function"}, headers=staff)
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "dispensed"  # what was supplied stays supplied
    db.session.expire_all()
    assert db.session.get(Prescription, second.id).status is PrescriptionStatus.CANCELLED

    item = db.session.get(PrescriptionItem, item.id)
    status = rx_service.repeat_status(db.session, item, today)
    assert not status.can_order and status.remaining == 0
    assert "stopped this repeat prescription" in status.reason
    assert rx_service.request_repeat(db.session, patient, item.id, actor=user)[1] is None
    db.session.rollback()
    patient_headers = {"Authorization": "Bearer " + api_token(client, user.email,
                                                              DEFAULT_PASSWORD)}
    refused = client.post("/api/v1/me/repeat-requests", json={"item_id": item.id},
                          headers=patient_headers)
    assert refused.status_code == 409
    for day in (today, today + timedelta(days=30)):
        assert notify.create_repeat_reminders(db.session, day) == 0

    from pharmacy.services.dose_calendar import current_repeat_items

    assert current_repeat_items(db.session, patient, today) == []  # stopped: not taken now

    review = db.session.scalar(select(PrescriptionReview).where(
        PrescriptionReview.prescription_id == rx.id))
    assert review.action.value == "withdrawn" and "renal" in review.reason
    actions = set(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.entity_type == "prescription")))
    assert {"prescription.withdrawn", "prescription.repeats_stopped"} <= actions
    assert db.session.scalar(select(Notification).where(
        Notification.kind == "prescription.withdrawn"))
    again = client.post(f"/api/v1/prescriptions/{second.id}/withdrawal",
                        json={"reason": "twice"}, headers=staff)
    assert again.status_code == 409  # stopped once is stopped


def _migration_0013():  # type: ignore[no-untyped-def]
    import importlib.util
    from pathlib import Path

    path = (Path(__file__).resolve().parents[2] / "migrations" / "versions"
            / "0013_prescription_item_supplied_at.py")
    spec = importlib.util.spec_from_file_location("migration_0013", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_0013_dates_items_supplied_before_it_by_their_packing(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    rx = _two_item_batch(db, world, "Ramipril 5mg capsules")
    a, b = rx.items
    order = _order_and_pack(client, db, world, [a.id])
    packed_at = db.session.scalar(select(AuditEvent.occurred_at).where(
        AuditEvent.action == "order.packed", AuditEvent.entity_id == str(order.id)))
    # As a row supplied before the revision: no time of its own.
    db.session.execute(PrescriptionItem.__table__.update().values(supplied_at=None))
    db.session.commit()

    db.session.execute(_migration_0013().BACKFILL)
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(PrescriptionItem, a.id).supplied_at == packed_at
    assert db.session.get(PrescriptionItem, b.id).supplied_at is None  # never ordered


def test_a_supplied_repeat_issue_is_withdrawn_from_its_page(client, db) -> None:  # type: ignore[no-untyped-def]
    from tests.pharmacy.helpers import csrf_token

    pharmacist = UserFactory(role=Role.PHARMACIST)
    patient = PatientFactory(user_id=UserFactory(role=Role.PATIENT).id)
    rx = _batch(db, patient, [(None, 28)], repeats=5)
    _dispense(db, rx, pharmacist, utcnow() - timedelta(days=3))
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    page = client.get(f"/pharmacist/prescriptions/{rx.id}").get_data(as_text=True)
    assert "withdrawing it stops the repeats still to come" in page
    done = client.post(f"/pharmacist/prescriptions/{rx.id}/withdraw", data={
        "csrf_token": csrf_token(client, f"/pharmacist/prescriptions/{rx.id}"),
        "withdraw-reason": "prescriber stopped it"})
    assert done.status_code == 302
    db.session.expire_all()
    assert rx_service.repeats_stopped(db.session, db.session.get(Prescription, rx.id))


def test_an_item_whose_packed_order_never_reached_the_patient_is_not_supplied(  # type: ignore[no-untyped-def]
        client, db, world) -> None:  # noqa: F811
    rx = _two_item_batch(db, world, "Lisinopril 10mg tablets")
    a, b = rx.items
    first = _order_and_pack(client, db, world, [a.id, b.id])
    db.session.expire_all()
    assert db.session.get(Prescription, rx.id).status is PrescriptionStatus.DISPENSED
    orders.cancel(db.session, db.session.get(Order, first.id), actor=world["pharmacist"],
                  reason="patient moved away before dispatch")
    db.session.commit()
    db.session.expire_all()
    issue = db.session.get(Prescription, rx.id)
    assert issue.status is PrescriptionStatus.VERIFIED and issue.dispensed_at is None
    assert all(item.supplied_at is None for item in issue.items)
    assert {"prescription.item_supply_undone", "prescription.dispensing_undone"} <= set(
        db.session.scalars(select(AuditEvent.action)))
    # Ordered again, it is supplied from this packing.
    again = _order_and_pack(client, db, world, [a.id])
    db.session.expire_all()
    assert db.session.get(PrescriptionItem, a.id).supplied_at is not None
    assert db.session.get(PrescriptionItem, b.id).supplied_at is None
    assert again.id != first.id


def test_a_line_stays_listed_until_its_last_issue_is_supplied(db) -> None:  # type: ignore[no-untyped-def]
    pharmacist = UserFactory(role=Role.PHARMACIST)
    user = UserFactory(role=Role.PATIENT)
    patient = PatientFactory(user_id=user.id)
    rx = _batch(db, patient, [(None, 28), (None, 28)], repeats=3)
    rx.items[1].repeats_allowed = 1  # line 2 may be issued twice in all
    _dispense(db, rx, pharmacist, utcnow() - timedelta(days=30))
    _, second = rx_service.request_repeat(db.session, patient, rx.items[0].id, actor=user)
    assert second is not None and len(second.items) == 2
    second.status = PrescriptionStatus.VERIFIED
    line_1 = next(i for i in second.items if i.line_id == rx.items[0].line_id)
    rx_service.record_supply(db.session, second, [line_1], pharmacist,
                             now=utcnow() - timedelta(days=25))
    _, third = rx_service.request_repeat(db.session, patient, line_1.id, actor=user)
    assert third is not None and [i.line_id for i in third.items] == [line_1.line_id]
    listed = {s.item.line_id for s in rx_service.my_medicines(db.session, patient, _today())}
    assert rx.items[1].line_id in listed  # its last issue (the second) is still to be had


@pytest.mark.parametrize("packed", ["one item", "every item"])
def test_withdrawing_pulls_a_parcel_packed_but_not_yet_out(client, db, world, packed) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    rx = _two_item_batch(db, world, "Atorvastatin 20mg tablets")
    a, b = rx.items
    order = _order_and_pack(client, db, world, [a.id] if packed == "one item" else [a.id, b.id])
    db.session.expire_all()
    issue = db.session.get(Prescription, rx.id)
    assert issue.status is (PrescriptionStatus.VERIFIED if packed == "one item"
                            else PrescriptionStatus.DISPENSED)
    rx_service.withdraw(db.session, issue, world["pharmacist"], "eGFR fell: stop it")
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Order, order.id).status is OrderStatus.CANCELLED
    issue = db.session.get(Prescription, rx.id)
    assert issue.status is PrescriptionStatus.CANCELLED
    assert all(item.supplied_at is None for item in issue.items)
    batch = db.session.scalar(select(StockBatch).where(
        StockBatch.medicine_id == a.medicine_id))
    assert batch.quantity_reserved == 0  # what was picked is back on the shelf
    headers = _auth(client, world["patient"])
    again = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": a.id}], "address_id": _address(db, world["patient"]),
        "slot_id": _slot(client, headers)}, headers=headers)
    assert again.status_code == 422
