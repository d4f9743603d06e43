"""Every route × every role: who may, who may not. A new route without an entry fails here.

"Allowed" means the request got past authentication and authorisation (whatever it then
answered: 200, 302, 400, 409, 422...). "Denied" means 401, 403, a redirect to sign in, or —
for another user's object — 404, which does not even confirm that the object exists.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from flask import Flask, current_app
from sqlalchemy import select

from pharmacy.models import (
    Address,
    AttemptOutcome,
    CDRegister,
    Courier,
    DeliveryAttempt,
    DeliveryRoute,
    DeliveryStop,
    DeliveryWave,
    Order,
    OrderStatus,
    Prescription,
    PrescriptionItem,
    PrescriptionStatus,
    Role,
    StockBatch,
    Vehicle,
)
from pharmacy.services.photos import PhotoStore
from tests.factories import (
    DEFAULT_PASSWORD,
    MedicineFactory,
    PatientFactory,
    PharmacyFactory,
    UserFactory,
)

# The smallest valid PNG (1x1, grey), for a stored delivery photo.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                    "3a7e9b550000000a49444154789c63680000008200816cc8a1e00000000049454e44ae426082")

ROLES = ("anonymous", "patient", "other_patient", "pharmacist", "courier", "other_courier",
         "admin", "api_client")
EVERYONE = frozenset(ROLES)
SIGNED_IN = EVERYONE - {"anonymous"}
PATIENTS = frozenset({"patient", "other_patient"})
STAFF = frozenset({"pharmacist"})
COURIERS = frozenset({"courier", "other_courier"})

# (endpoint, method) -> roles allowed. Object routes use the objects of "patient" and
# "courier"; "other_patient" and "other_courier" must be refused them.
MATRIX: dict[tuple[str, str], frozenset[str]] = {
    # Anonymous visitors (and API-only accounts, which have no pages) are sent to sign in.
    ("auth.index", "GET"): SIGNED_IN - {"api_client"},
    ("auth.login", "GET"): EVERYONE,
    ("auth.login", "POST"): EVERYONE,
    ("auth.logout", "POST"): EVERYONE,
    ("auth.change_password", "GET"): SIGNED_IN - {"api_client"},
    ("auth.change_password", "POST"): SIGNED_IN - {"api_client"},
    # The code step of a sign-in exists only while one waits for its code (password accepted
    # moments ago); anyone else is sent to sign in. tests/security/test_totp.py covers it.
    ("auth.second_factor", "GET"): frozenset(),
    ("auth.second_factor", "POST"): frozenset(),
    ("account.two_factor", "GET"): frozenset({"pharmacist", "admin"}),
    ("account.setup", "POST"): frozenset({"pharmacist", "admin"}),
    ("account.confirm", "POST"): frozenset({"pharmacist", "admin"}),
    ("account.disable", "POST"): frozenset({"pharmacist", "admin"}),
    ("account.recovery_codes", "POST"): frozenset({"pharmacist", "admin"}),
    ("auth.register", "GET"): EVERYONE,
    ("auth.register", "POST"): EVERYONE,
    ("auth.forgot_password", "GET"): EVERYONE,
    ("auth.forgot_password", "POST"): EVERYONE,
    ("auth.open_reset_link", "GET"): EVERYONE,
    ("auth.open_confirm_link", "GET"): EVERYONE,
    ("auth.confirm_registration", "GET"): EVERYONE,
    ("auth.confirm_registration", "POST"): EVERYONE,
    ("auth.reset_password", "GET"): EVERYONE,
    ("auth.reset_password", "POST"): EVERYONE,
    ("health.healthz", "GET"): EVERYONE,
    ("health.readyz", "GET"): EVERYONE,
    ("_metrics", "GET"): EVERYONE,  # for the scraper; counts only, no ids or patient data
    ("api-docs.openapi_json", "GET"): EVERYONE,
    ("api_auth.TokenResource", "POST"): EVERYONE,
    ("api_payments.StripeWebhook", "POST"): EVERYONE,  # signature-checked, not role-checked
    ("api_auth.MeResource", "GET"): SIGNED_IN,
    ("api_medicines.MedicineList", "GET"): SIGNED_IN,
    ("api_medicines.MedicineItem", "GET"): SIGNED_IN,
    # patients' own API
    ("api_me.MyMedicines", "GET"): PATIENTS,
    ("api_me.RepeatRequests", "POST"): PATIENTS,
    ("api_me_cards.CardList", "GET"): PATIENTS,
    ("api_me_cards.CardSetupIntent", "POST"): PATIENTS,
    ("api_me_cards.CardItem", "DELETE"): PATIENTS,
    ("api_slots.SlotCollection", "GET"): PATIENTS,
    ("api_orders.OrderCollection", "GET"): PATIENTS,
    ("api_orders.OrderCollection", "POST"): PATIENTS,
    ("api_orders.OrderItem", "GET"): frozenset({"patient", "pharmacist", "admin"}),
    ("api_orders.OrderCancellation", "POST"): frozenset({"patient", "pharmacist", "admin"}),
    ("api_orders.OrderPayment", "POST"): frozenset({"patient"}),
    ("api_orders.OrderPaymentConfirmation", "POST"): frozenset({"patient"}),
    ("api_orders.OrderDeliverySlot", "POST"): frozenset({"patient"}),
    ("api_orders.OrderTransitions", "POST"): frozenset({"pharmacist", "admin"}),
    # prescriptions
    ("api_prescriptions.ValidateResource", "POST"): frozenset({"pharmacist", "api_client"}),
    ("api_prescriptions.PrescriptionCollection", "POST"): frozenset({"api_client"}),
    ("api_prescriptions.PrescriptionCollection", "GET"): STAFF,
    ("api_prescriptions.PrescriptionItemResource", "GET"): STAFF,
    ("api_prescriptions.VerificationResource", "POST"): STAFF,
    ("api_prescriptions.SecondCheckResource", "POST"): STAFF,
    ("api_prescriptions.RejectionResource", "POST"): STAFF,
    ("api_prescriptions.WithdrawalResource", "POST"): STAFF,
    ("api_prescriptions.QueryResource", "POST"): STAFF,
    ("api_prescriptions.QueryAnswerResource", "POST"): STAFF,
    ("api_prescriptions.DispensingResource", "POST"): STAFF,
    # pages
    ("patient.home", "GET"): PATIENTS,
    ("patient.medicines", "GET"): PATIENTS,
    ("patient.request_repeat", "POST"): frozenset({"patient"}),
    ("patient.shop", "GET"): PATIENTS,
    ("patient.basket", "GET"): PATIENTS,
    ("patient.add_to_basket", "POST"): PATIENTS,
    ("patient.place", "POST"): PATIENTS,
    ("patient.order_list", "GET"): PATIENTS,
    ("patient.track", "GET"): frozenset({"patient"}),
    ("patient.cancel", "POST"): frozenset({"patient"}),
    ("patient.rebook", "POST"): frozenset({"patient"}),
    ("patient.pay", "GET"): frozenset({"patient"}),
    ("patient.pay_submit", "POST"): frozenset({"patient"}),
    ("patient.pay_confirm", "POST"): frozenset({"patient"}),
    ("patient.setup_intent", "POST"): frozenset({"patient"}),
    ("patient.profile", "GET"): PATIENTS,
    ("patient.profile_update", "POST"): PATIENTS,
    ("patient.allergy_add", "POST"): PATIENTS,
    ("patient.address_add", "POST"): PATIENTS,
    ("patient.dose_calendar", "GET"): PATIENTS,
    ("patient.refill_sync", "GET"): PATIENTS,
    ("pharmacist.home", "GET"): STAFF,
    ("pharmacist.queue", "GET"): STAFF,
    ("pharmacist.detail", "GET"): STAFF,
    ("pharmacist.act", "POST"): STAFF,
    ("pharmacist.packing_list", "GET"): STAFF,
    ("pharmacist.stock", "GET"): STAFF,
    ("pharmacist.recall", "POST"): STAFF,
    ("pharmacist.recall_report", "GET"): STAFF,
    ("pharmacist.goods_in", "GET"): STAFF,
    ("pharmacist.receive", "POST"): STAFF,
    ("pharmacist.batch", "GET"): STAFF,
    ("pharmacist.batch_action", "POST"): STAFF,
    ("pharmacist.cd_registers", "GET"): STAFF,
    ("pharmacist.cd_register", "GET"): STAFF,
    ("pharmacist.cd_register_correction", "POST"): STAFF,
    ("pharmacist.purchase_orders", "GET"): STAFF,
    ("pharmacist.reorder_settings", "POST"): STAFF,
    ("pharmacist.purchase_order", "GET"): STAFF,
    ("pharmacist.purchase_order_action", "POST"): STAFF,
    ("pharmacist.purchase_order_line", "POST"): STAFF,
    ("pharmacist.reorders", "GET"): STAFF,
    ("pharmacist.account_links", "GET"): STAFF,
    ("pharmacist.decide_account_link", "POST"): STAFF,
    ("pharmacist.recalled_parcels", "GET"): STAFF,
    ("pharmacist.close_recall", "POST"): STAFF,
    ("pharmacist.reorders_accept", "POST"): STAFF,
    ("planner.waves", "GET"): frozenset({"pharmacist", "admin"}),
    ("planner.plan_slot", "POST"): frozenset({"pharmacist", "admin"}),
    ("planner.wave", "GET"): frozenset({"pharmacist", "admin"}),
    ("planner.move", "POST"): frozenset({"pharmacist", "admin"}),
    ("planner.replan", "POST"): frozenset({"pharmacist", "admin"}),
    ("courier.home", "GET"): COURIERS,
    ("courier.route", "GET"): frozenset({"courier"}),
    ("courier.start", "POST"): frozenset({"courier"}),
    ("courier.stop", "GET"): frozenset({"courier"}),
    ("courier.action", "POST"): frozenset({"courier"}),
    # Photo proof of delivery: staff who run deliveries and the courier of that route only.
    ("proof.photo", "GET"): frozenset({"pharmacist", "admin", "courier"}),
    ("admin.home", "GET"): frozenset({"admin"}),
    ("admin.audit", "GET"): frozenset({"admin"}),
    ("admin.jobs", "GET"): frozenset({"admin"}),
    ("admin.requeue", "POST"): frozenset({"admin"}),
    ("admin.users", "GET"): frozenset({"admin"}),
    ("admin.create_user", "POST"): frozenset({"admin"}),
    ("admin.user", "GET"): frozenset({"admin"}),
    ("admin.change_user", "POST"): frozenset({"admin"}),
}


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):  # type: ignore[operator]
            out.append((rule.endpoint, method, rule.rule))
    return out


def test_every_route_has_an_entry(app: Flask) -> None:
    missing = [(e, m, r) for e, m, r in _routes(app) if (e, m) not in MATRIX]
    assert not missing, f"add these routes to the authorisation matrix: {missing}"
    stale = set(MATRIX) - {(e, m) for e, m, _ in _routes(app)}
    assert not stale, f"these matrix entries match no route: {stale}"


@pytest.fixture()
def world(db):  # type: ignore[no-untyped-def]
    pharmacy = PharmacyFactory()
    users = {role: UserFactory(role={"patient": Role.PATIENT, "other_patient": Role.PATIENT,
                                     "pharmacist": Role.PHARMACIST, "courier": Role.COURIER,
                                     "other_courier": Role.COURIER, "admin": Role.ADMIN,
                                     "api_client": Role.API_CLIENT}[role])
             for role in ROLES if role != "anonymous"}
    patients = {}
    for role in ("patient", "other_patient"):
        patient = PatientFactory(user_id=users[role].id, nominated_pharmacy_id=pharmacy.id)
        db.session.add(Address(patient=patient, line1="1 Road", city="Leeds",
                               postcode="LS1 1AA", latitude=53.8, longitude=-1.55))
        patients[role] = patient
    couriers = {}
    for n, role in enumerate(("courier", "other_courier")):
        van = Vehicle(pharmacy_id=pharmacy.id, registration=f"V{n}", capacity_parcels=10,
                      capacity_volume_l=100)
        db.session.add(van)
        db.session.flush()
        couriers[role] = Courier(user_id=users[role].id, pharmacy_id=pharmacy.id,
                                 shift_start=time(8), shift_end=time(20),
                                 default_vehicle_id=van.id)
        db.session.add(couriers[role])
    medicine = MedicineFactory(cd_schedule=2)
    rx = Prescription(prescription_id="MATRIX-1", patient_id=patients["patient"].id,
                      status=PrescriptionStatus.VERIFIED, prescription_type="repeat",
                      repeats_allowed=2, source_bundle={"resourceType": "Bundle"})
    rx.items.append(PrescriptionItem(line_id="1", medicine_id=medicine.id,
                                     medication_code=medicine.code,
                                     medication_display=medicine.name, quantity=Decimal(28)))
    db.session.add(rx)
    start = datetime.combine(date.today() + timedelta(days=1), time(12), tzinfo=UTC)
    order = Order(reference="MATRIX1", patient_id=patients["patient"].id,
                  pharmacy_id=pharmacy.id, status=OrderStatus.PACKED,
                  delivery_window_start=start, delivery_window_end=start + timedelta(hours=2))
    db.session.add(order)
    db.session.flush()
    wave = DeliveryWave(pharmacy_id=pharmacy.id, window_start=start,
                        window_end=start + timedelta(hours=2),
                        cutoff_at=start - timedelta(hours=2))
    db.session.add(wave)
    db.session.flush()
    route = DeliveryRoute(wave_id=wave.id, vehicle_id=couriers["courier"].default_vehicle_id,
                          courier_id=couriers["courier"].id)
    db.session.add(route)
    db.session.flush()
    stop = DeliveryStop(wave_id=wave.id, route_id=route.id, order_id=order.id, sequence=1)
    db.session.add(stop)
    db.session.flush()
    photo = PhotoStore.from_settings(current_app.config, current_app.instance_path).save(PNG)
    attempt = DeliveryAttempt(stop_id=stop.id, courier_id=couriers["courier"].id,
                              client_action_id="matrix-photo", outcome=AttemptOutcome.DELIVERED,
                              recipient_name="R", photo_path=photo)
    db.session.add(attempt)
    db.session.add(CDRegister(pharmacy_id=pharmacy.id, medicine_id=medicine.id))
    batch = StockBatch(pharmacy_id=pharmacy.id, medicine_id=medicine.id, lot_number="MATRIX",
                       expiry_date=date.today() + timedelta(days=90))
    db.session.add(batch)
    db.session.commit()
    ids = {"order_id": order.id, "prescription_id": rx.id, "item_id": rx.items[0].id,
           "medicine_id": medicine.id, "route_id": route.id, "stop_id": stop.id,
           "wave_id": wave.id, "slot_id": 999_999, "patient_id": patients["patient"].id,
           "register_id": db.session.scalar(select(CDRegister.id)), "job_id": "no-such-job",
           "card_id": "pm_missing", "action": "reject", "attempt_id": attempt.id,
           "batch_id": batch.id, "change": "write-off", "po_change": "send", "line_id": 1,
           "link_id": 1, "decision": "refuse", "user_id": users["patient"].id,
           "account_change": "unlock", "outcome": "received",
           "token": "not-a-reset-token"}
    return {"users": users, "ids": ids}


def _path(rule: str, ids: dict[str, object]) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([a-z_]+)>", lambda m: str(ids[m.group(1)]), rule)


def _denied(response, role: str, allowed: frozenset[str], owner_scoped: bool) -> bool:  # type: ignore[no-untyped-def]
    if response.status_code in (401, 403):
        return True
    if response.status_code == 302 and "/login" in response.headers.get("Location", ""):
        return True  # no web session (anonymous, or an API-only account)
    # Another user's object: "not found" hides that it exists.
    return owner_scoped and response.status_code == 404


@pytest.mark.parametrize("role", ROLES)
def test_authorisation_matrix(app: Flask, client, db, world, role: str) -> None:  # type: ignore[no-untyped-def]
    from tests.pharmacy.helpers import csrf_token, web_login

    headers: dict[str, str] = {}
    if role != "anonymous":
        user = world["users"][role]
        if role != "api_client":
            assert web_login(client, user.email, DEFAULT_PASSWORD).status_code == 302
        token = client.post("/api/v1/auth/token", json={
            "email": user.email, "password": DEFAULT_PASSWORD}).get_json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
    csrf = csrf_token(client, "/login")
    wrong = []
    for endpoint, method, rule in sorted(_routes(app)):
        if endpoint in ("auth.logout",):
            continue  # would end this role's session for the remaining checks
        allowed = MATRIX[(endpoint, method)]
        owner_scoped = "<" in rule and len(allowed) < len(EVERYONE) and (
            "patient" in allowed or "courier" in allowed)
        path = _path(rule, world["ids"])
        if path.startswith("/api/"):
            response = client.open(path, method=method, headers=headers, json={})
        else:
            response = client.open(path, method=method, data={"csrf_token": csrf})
        denied = _denied(response, role, allowed, owner_scoped)
        if (role in allowed) == denied:
            wrong.append((method, path, response.status_code,
                          "allowed" if role in allowed else "denied"))
    assert not wrong, f"{role}: against the matrix (method, path, status, expected): {wrong}"
