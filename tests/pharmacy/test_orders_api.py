"""The orders API: checkout, tracking, bad input and illegal transitions (4xx, never 500)."""

from __future__ import annotations

from datetime import date, time, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from pharmacy.models import (
    Address,
    Courier,
    Order,
    Prescription,
    PrescriptionItem,
    PrescriptionStatus,
    Role,
    StockBatch,
    Vehicle,
)
from tests.factories import (
    DEFAULT_PASSWORD,
    MedicineFactory,
    PatientFactory,
    PharmacyFactory,
    UserFactory,
)
from tests.pharmacy.helpers import api_token


def _auth(client, user) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {api_token(client, user.email, DEFAULT_PASSWORD)}"}


@pytest.fixture()
def world(client, db):  # type: ignore[no-untyped-def]
    pharmacy = PharmacyFactory()
    van = Vehicle(pharmacy_id=pharmacy.id, registration="T1", capacity_parcels=40,
                  capacity_volume_l=500, has_fridge=False)
    db.session.add(van)
    db.session.flush()
    courier_user = UserFactory(role=Role.COURIER)
    db.session.add(Courier(user_id=courier_user.id, pharmacy_id=pharmacy.id,
                           shift_start=time(0, 0), shift_end=time(23, 59),
                           default_vehicle_id=van.id))
    otc = MedicineFactory(name="Cetirizine 10mg tablets", prescription_only=False, pack_size=30,
                          unit_price_minor=349)
    rx_medicine = MedicineFactory(name="Amlodipine 5mg tablets", pack_size=28)
    fridge = MedicineFactory(name="Insulin pen", cold_chain=True, pack_size=5)
    for medicine in (otc, rx_medicine, fridge):
        db.session.add(StockBatch(pharmacy_id=pharmacy.id, medicine=medicine,
                                  lot_number=f"L{medicine.code}", quantity_on_hand=500,
                                  expiry_date=date.today() + timedelta(days=500)))
    users, patients = [], []
    for n in range(2):
        user = UserFactory(role=Role.PATIENT)
        patient = PatientFactory(user_id=user.id, nominated_pharmacy_id=pharmacy.id,
                                 charge_exemption="A" if n == 1 else None)
        db.session.add(Address(patient=patient, line1=f"{n} Road", city="Leeds",
                               postcode="LS6 1AA", latitude=53.82, longitude=-1.57))
        users.append(user)
        patients.append(patient)
    rx = Prescription(prescription_id="RX-1", patient_id=patients[0].id,
                      status=PrescriptionStatus.VERIFIED, prescription_type="repeat",
                      repeats_allowed=3, source_bundle={"resourceType": "Bundle"})
    rx.items.append(PrescriptionItem(line_id="1", medicine_id=rx_medicine.id,
                                     medication_code=rx_medicine.code,
                                     medication_display=rx_medicine.name,
                                     quantity=Decimal(28), supply_duration_days=28))
    db.session.add(rx)
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    return {"patient": users[0], "exempt": users[1], "courier": courier_user, "otc": otc,
            "fridge": fridge, "rx_item": rx.items[0], "patients": patients,
            "pharmacist": pharmacist}


def _slot(client, headers, fridge=False) -> int:  # type: ignore[no-untyped-def]
    slots = client.get(f"/api/v1/slots?needs_fridge={'true' if fridge else 'false'}",
                       headers=headers).get_json()
    assert slots, "no bookable slot"
    return int(slots[0]["id"])


def _address(db, user) -> int:  # type: ignore[no-untyped-def]
    return int(db.session.scalar(select(Address.id).join(Address.patient).where(
        Address.patient.has(user_id=user.id))))


def test_checkout_prices_prescription_items_and_products(client, db, world) -> None:  # type: ignore[no-untyped-def]
    db.session.commit()
    headers = _auth(client, world["patient"]) | {"Idempotency-Key": "checkout-0001"}
    body = {"lines": [{"prescription_item_id": world["rx_item"].id},
                      {"medicine_id": world["otc"].id, "quantity": 2}],
            "address_id": _address(db, world["patient"]), "slot_id": _slot(client, headers)}
    response = client.post("/api/v1/orders", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    order = response.get_json()
    assert order["status"] == "placed"
    assert order["prescription_charge_minor"] == 990
    assert order["subtotal_minor"] == 2 * 349
    assert order["total_minor"] == 990 + 698
    replay = client.post("/api/v1/orders", json=body, headers=headers)
    assert replay.status_code == 201 and replay.get_json()["id"] == order["id"]
    changed = dict(body, lines=body["lines"][:1])
    reused = client.post("/api/v1/orders", json=changed, headers=headers)
    assert reused.status_code == 422
    assert reused.get_json()["code"] == "idempotency_key_reused"
    tracked = client.get(f"/api/v1/orders/{order['id']}", headers=headers).get_json()
    assert tracked["reference"] == order["reference"]


def test_an_exempt_patient_pays_nothing_and_goes_straight_on(client, db, world) -> None:  # type: ignore[no-untyped-def]
    exempt_patient = world["patients"][1]
    item = world["rx_item"]
    rx = Prescription(prescription_id="RX-2", patient_id=exempt_patient.id,
                      status=PrescriptionStatus.VERIFIED, prescription_type="repeat",
                      repeats_allowed=1, source_bundle={})
    rx.items.append(PrescriptionItem(line_id="1", medicine_id=item.medicine_id,
                                     medication_code="x", medication_display="Amlodipine",
                                     quantity=Decimal(28)))
    db.session.add(rx)
    db.session.commit()
    headers = _auth(client, world["exempt"])
    response = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": rx.items[0].id}],
        "address_id": _address(db, world["exempt"]), "slot_id": _slot(client, headers)},
        headers=headers)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["total_minor"] == 0
    assert response.get_json()["status"] == "ready_to_pick"


def test_cold_chain_items_only_get_fridge_slots(client, db, world) -> None:  # type: ignore[no-untyped-def]
    headers = _auth(client, world["patient"])
    assert client.get("/api/v1/slots?needs_fridge=true", headers=headers).get_json() == []


@pytest.mark.parametrize("line,field", [
    ({"medicine_id": 1, "quantity": -1}, "lines.0.quantity"),
    ({"medicine_id": 999999}, "lines.0.medicine_id"),
    ({"medicine_id": 1, "prescription_item_id": 1}, "lines.0"),
    ({"medicine_id": "1"}, "lines.0.medicine_id"),
    ({"medicine_id": 1.5}, "lines.0.medicine_id"),
])
def test_bad_lines_are_422_and_change_nothing(client, db, world, line, field) -> None:  # type: ignore[no-untyped-def]
    headers = _auth(client, world["patient"])
    response = client.post("/api/v1/orders", json={
        "lines": [line], "address_id": _address(db, world["patient"]),
        "slot_id": _slot(client, headers)}, headers=headers)
    assert response.status_code == 422, response.get_json()
    assert any(e["field"].startswith(field) for e in response.get_json()["errors"]), \
        response.get_json()
    assert db.session.scalar(select(func.count(Order.id))) == 0


def test_prescription_only_medicine_cannot_be_bought_over_the_counter(client, db, world) -> None:  # type: ignore[no-untyped-def]
    headers = _auth(client, world["patient"])
    response = client.post("/api/v1/orders", json={
        "lines": [{"medicine_id": world["rx_item"].medicine_id}],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, headers)},
        headers=headers)
    assert response.status_code == 422
    assert "needs a prescription" in response.get_json()["errors"][0]["message"]


def test_another_patients_order_item_and_address_are_refused(client, db, world) -> None:  # type: ignore[no-untyped-def]
    mine = _auth(client, world["patient"])
    theirs = _auth(client, world["exempt"])
    placed = client.post("/api/v1/orders", json={
        "lines": [{"medicine_id": world["otc"].id}],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, mine)},
        headers=mine).get_json()
    assert client.get(f"/api/v1/orders/{placed['id']}", headers=theirs).status_code == 404
    assert client.post(f"/api/v1/orders/{placed['id']}/cancellation",
                       json={"reason": "x"}, headers=theirs).status_code == 404
    stolen_item = client.post("/api/v1/orders", json={
        "lines": [{"prescription_item_id": world["rx_item"].id}],
        "address_id": _address(db, world["exempt"]), "slot_id": _slot(client, theirs)},
        headers=theirs)
    assert stolen_item.status_code == 422
    stolen_address = client.post("/api/v1/orders", json={
        "lines": [{"medicine_id": world["otc"].id}],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, theirs)},
        headers=theirs)
    assert stolen_address.status_code == 422


def test_illegal_transitions_are_409_and_change_nothing(client, db, world) -> None:  # type: ignore[no-untyped-def]
    db.session.commit()
    patient = _auth(client, world["patient"])
    staff = _auth(client, world["pharmacist"])
    placed = client.post("/api/v1/orders", json={
        "lines": [{"medicine_id": world["otc"].id}],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, patient)},
        headers=patient).get_json()
    url = f"/api/v1/orders/{placed['id']}/transitions"
    assert client.post(url, json={"to": "delivered"}, headers=staff).status_code == 409
    assert client.post(url, json={"to": "packed"}, headers=staff).status_code == 409
    assert client.post(url, json={"to": "teleported"}, headers=staff).status_code == 422
    assert client.post(url, json={"to": "packed"}, headers=patient).status_code == 403
    # Unpaid: cannot go out for delivery without a payment to capture.
    order = db.session.get(Order, placed["id"])
    assert order.status.value == "placed"
    cancelled = client.post(f"/api/v1/orders/{placed['id']}/cancellation",
                            json={"reason": "no longer needed"}, headers=patient)
    assert cancelled.get_json()["status"] == "cancelled"
    again = client.post(f"/api/v1/orders/{placed['id']}/cancellation",
                        json={"reason": "twice"}, headers=patient)
    assert again.status_code == 409
    db.session.expire_all()
    batch = db.session.scalar(select(StockBatch).where(
        StockBatch.medicine_id == world["otc"].id))
    assert batch.quantity_reserved == 0


def test_partial_supply_lowers_the_total(client, db, world) -> None:  # type: ignore[no-untyped-def]
    exempt = world["exempt"]
    headers = _auth(client, exempt)
    staff = _auth(client, world["pharmacist"])
    placed = client.post("/api/v1/orders", json={
        "lines": [{"medicine_id": world["otc"].id, "quantity": 2}],
        "address_id": _address(db, exempt), "slot_id": _slot(client, headers)},
        headers=headers).get_json()
    order = db.session.get(Order, placed["id"])
    order.status = order.status.__class__("ready_to_pick")
    db.session.commit()
    line_id = placed["lines"][0]["id"]
    packed = client.post(f"/api/v1/orders/{placed['id']}/transitions",
                         json={"to": "packed", "supplied": {str(line_id): 30}}, headers=staff)
    assert packed.status_code == 200, packed.get_json()
    assert packed.get_json()["total_minor"] == 349
    assert packed.get_json()["lines"][0]["quantity_supplied"] == 30


def test_the_pharmacy_medicine_sales_limit_counts_every_line_of_a_product(  # type: ignore[no-untyped-def]
        client, db, world) -> None:
    headers = _auth(client, world["patient"])
    otc = world["otc"].id
    response = client.post("/api/v1/orders", json={
        "lines": [{"medicine_id": otc, "quantity": 2}, {"medicine_id": otc, "quantity": 1}],
        "address_id": _address(db, world["patient"]), "slot_id": _slot(client, headers)},
        headers=headers)
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert [e["field"] for e in errors] == ["lines.1.quantity"]
    assert "over all lines" in errors[0]["message"]
    assert db.session.scalar(select(func.count(Order.id))) == 0
