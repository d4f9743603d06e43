"""Demo data for a first run: a Leeds depot, staff, vans, ~200 patients and their history.

Everything is generated from a fixed random seed, so two runs give the same data. Seeding is
idempotent: the formulary is upserted, and the rest is created only when the demo depot is
absent (it is written in one transaction, so it is all there or not at all).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from stdnum.gb import nhs

from ..models import (
    Address,
    Allergy,
    BatchStatus,
    CDEntryKind,
    Courier,
    CurrentMedication,
    Medicine,
    MovementKind,
    Order,
    OrderLine,
    OrderStatus,
    PatientProfile,
    Pharmacy,
    Prescriber,
    PrescriberProfession,
    Prescription,
    PrescriptionItem,
    PrescriptionStatus,
    Role,
    StockBatch,
    StockMovement,
    User,
    Vehicle,
)
from . import audit
from .auth import hash_password
from .formulary import load_formulary
from .inventory_ledger import add_register_entry

logger = logging.getLogger(__name__)

DEMO_ODS_CODE = "FDE01"
# Leeds city centre (Park Row); patients are scattered within ~8 km.
DEPOT_LAT, DEPOT_LON = 53.7983, -1.5469
PATIENT_COUNT = 200
# NHS England prescription charge per item (GBP 9.90, unchanged from 1 May 2025); used for
# the demo order history only. The live pricing rule is configurable (ordering issue).
PRESCRIPTION_CHARGE_MINOR = 990

DEMO_ACCOUNTS = {
    Role.PATIENT: ("patient@example.com", "demo-patient-1", "Alex Patient"),
    Role.PHARMACIST: ("pharmacist@example.com", "demo-pharmacist-1", "Priya Pharmacist"),
    Role.COURIER: ("courier@example.com", "demo-courier-1", "Chris Courier"),
    Role.ADMIN: ("admin@example.com", "demo-admin-1", "Ada Admin"),
}

_GIVEN = ["Olivia", "Amelia", "Isla", "Ava", "Mia", "Noah", "Oliver", "George", "Arthur",
          "Muhammad", "Leo", "Harry", "Aisha", "Fatima", "Zara", "Jack", "Sophie", "Grace",
          "Ethan", "Ruby",
          "Yusuf", "Priya", "Tomasz", "Ewa", "Kwame", "Chloe", "Daniel", "Hannah", "Liam", "Evie"]
_FAMILY = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
           "Patel", "Khan", "Robinson", "Wright", "Thompson", "Evans", "Walker", "White",
           "Roberts", "Green", "Hall", "Wood", "Hussain", "Ali", "Kowalski", "Mensah", "Clarke"]
_STREETS = ["Headingley Lane", "Otley Road", "Roundhay Road", "Kirkstall Road", "Harehills Lane",
            "Chapeltown Road", "Beeston Road", "Dewsbury Road", "York Road", "Selby Road",
            "Street Lane", "Stonegate Road", "Tong Road", "Wellington Road", "Meanwood Road",
            "Cardigan Road", "Woodhouse Lane", "Easterly Road", "Austhorpe Road", "Town Street"]
_POSTCODES = ["LS6", "LS16", "LS8", "LS4", "LS9", "LS7", "LS11", "LS10", "LS14", "LS15", "LS17",
              "LS12", "LS13", "LS2", "LS3", "LS5"]
_SAFE_PLACES = [None, None, None, "Leave in the porch", "Ring twice, ground floor flat",
                "Gate code 4821", "Back door if no answer"]
_INWARD = "ABDEFGHJLNPQRSTUWXYZ"  # letters used in the inward part of UK postcodes
_ALLERGENS = ["penicillin", "amoxicillin", "ibuprofen", "codeine", "M01A", "J01C", "aspirin"]


@dataclass(frozen=True)
class SeedResult:
    created: bool
    medicines: int
    patients: int


def _nhs_number(rng: random.Random) -> str:
    """A random NHS number with a valid modulus-11 check digit."""
    while True:
        stem = "9" + "".join(str(rng.randrange(10)) for _ in range(8))  # 9xx: test range
        for check in "0123456789":
            if nhs.is_valid(stem + check):
                return stem + check


def _scatter(rng: random.Random, radius_km: float) -> tuple[float, float]:
    """A point uniformly spread over a disc around the depot."""
    r = radius_km * math.sqrt(rng.random())
    theta = rng.uniform(0, 2 * math.pi)
    dlat = (r * math.cos(theta)) / 111.32
    dlon = (r * math.sin(theta)) / (111.32 * math.cos(math.radians(DEPOT_LAT)))
    return round(DEPOT_LAT + dlat, 6), round(DEPOT_LON + dlon, 6)


def _fhir_bundle(rx_id: str, patient: PatientProfile, prescriber: Prescriber,
                 items: list[tuple[Medicine, int, str]], issued: date,
                 repeats_allowed: int) -> dict[str, Any]:
    """A small FHIR R4 message bundle as a prescribing system would send it."""
    entries: list[dict[str, Any]] = [
        {"resource": {"resourceType": "Patient", "id": "patient",
                      "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number",
                                      "value": patient.nhs_number}],
                      "name": [{"family": patient.family_name, "given": [patient.given_name]}],
                      "birthDate": patient.date_of_birth.isoformat()}},
        {"resource": {"resourceType": "Practitioner", "id": "prescriber",
                      "identifier": [{"system": "https://fhir.hl7.org.uk/Id/gmc-number",
                                      "value": prescriber.registration_number}],
                      "name": [{"family": prescriber.family_name,
                                "given": [prescriber.given_name or ""]}]}},
    ]
    for n, (medicine, quantity, dosage) in enumerate(items, start=1):
        entries.append({"resource": {
            "resourceType": "MedicationRequest", "id": f"item-{n}", "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{
                "system": "http://snomed.info/sct", "code": medicine.code,
                "display": medicine.name}]},
            "subject": {"reference": "Patient/patient"},
            "requester": {"reference": "Practitioner/prescriber"},
            "authoredOn": issued.isoformat(),
            "groupIdentifier": {"system": "https://fhir.nhs.uk/Id/prescription-order-number",
                                "value": rx_id},
            "courseOfTherapyType": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                "code": "continuous-repeat-dispensing" if repeats_allowed else "acute"}]},
            "dosageInstruction": [{"text": dosage}],
            "dispenseRequest": {
                "quantity": {"value": quantity, "unit": medicine.pack_unit or "dose"},
                "expectedSupplyDuration": {"value": 28, "unit": "day",
                                           "system": "http://unitsofmeasure.org",
                                           "code": "d"},
                "numberOfRepeatsAllowed": repeats_allowed}}})
    return {"resourceType": "Bundle", "type": "message", "entry": entries}


def _rx_short_id(rng: random.Random) -> str:
    hexdigits = "0123456789ABCDEF"
    part = lambda: "".join(rng.choice(hexdigits) for _ in range(6))  # noqa: E731
    return f"{part()}-{part()}-{part()}"


def seed_demo(session: Session, *, today: date | None = None, seed: int = 20261126) -> SeedResult:
    """Create the demo pharmacy and its people, stock and history (once)."""
    today = today or datetime.now(UTC).date()
    formulary = load_formulary(session)
    if session.scalar(select(Pharmacy).where(Pharmacy.ods_code == DEMO_ODS_CODE)) is not None:
        return SeedResult(False, formulary.medicines, 0)
    rng = random.Random(seed)

    depot = Pharmacy(
        name="Dispensary Leeds Central", ods_code=DEMO_ODS_CODE, line1="1 Park Row",
        city="Leeds", postcode="LS1 5HN", phone="0113 496 0000", latitude=DEPOT_LAT,
        longitude=DEPOT_LON, is_depot=True,
        opening_hours={d: [["08:30", "19:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}
        | {"sat": [["09:00", "17:00"]], "sun": []},
    )
    session.add(depot)
    session.flush()

    def account(email: str, password_hash: str, role: Role, name: str) -> User:
        user = User(email=email, password_hash=password_hash, role=role, full_name=name)
        session.add(user)
        return user

    # Staff: the demo pharmacist plus two colleagues; an admin; a prescribing system.
    for role in (Role.PHARMACIST, Role.ADMIN):
        email, password, name = DEMO_ACCOUNTS[role]
        account(email, hash_password(password), role, name)
    staff_hash = hash_password("demo-pharmacist-1")
    account("pharmacist2@example.com", staff_hash, Role.PHARMACIST, "Sam Second")
    account("pharmacist3@example.com", staff_hash, Role.PHARMACIST, "Jo Third")
    account("eps@example.com", hash_password("demo-eps-1"), Role.API_CLIENT,
            "Demo prescribing system")

    # Five vans (two with fridges) and five couriers.
    vans = []
    for n in range(5):
        van = Vehicle(pharmacy_id=depot.id, registration=f"YD26 DX{n + 1}",
                      capacity_parcels=40 if n < 3 else 60, capacity_volume_l=800,
                      has_fridge=n < 2, cost_per_km_minor=45, cost_per_hour_minor=1500)
        session.add(van)
        vans.append(van)
    session.flush()
    courier_hash = hash_password(DEMO_ACCOUNTS[Role.COURIER][1])
    for n in range(5):
        if n == 0:
            email, name = DEMO_ACCOUNTS[Role.COURIER][0], DEMO_ACCOUNTS[Role.COURIER][2]
        else:
            email, name = f"courier{n + 1}@example.com", f"{_GIVEN[n]} {_FAMILY[n]} (courier)"
        user = account(email, courier_hash, Role.COURIER, name)
        session.flush()
        session.add(Courier(user_id=user.id, pharmacy_id=depot.id, phone=f"07700 900{n:03d}",
                            shift_start=time(9, 0) if n % 2 == 0 else time(12, 0),
                            shift_end=time(17, 0) if n % 2 == 0 else time(20, 0),
                            default_vehicle_id=vans[n].id))

    prescribers = [
        Prescriber(given_name="Helen", family_name="Okafor",
                   profession=PrescriberProfession.DOCTOR,
                   registration_body="GMC", registration_number="7123456",
                   organisation_ods_code="B86001", organisation_name="Park Lane Surgery"),
        Prescriber(given_name="Martin", family_name="Reid", profession=PrescriberProfession.DOCTOR,
                   registration_body="GMC", registration_number="6034567",
                   organisation_ods_code="B86002", organisation_name="Meanwood Health Centre"),
        Prescriber(given_name="Ruth", family_name="Adeyemi", profession=PrescriberProfession.NURSE,
                   registration_body="NMC", registration_number="12A3456E",
                   organisation_ods_code="B86001", organisation_name="Park Lane Surgery"),
    ]
    session.add_all(prescribers)

    medicines = session.scalars(select(Medicine).order_by(Medicine.code)).all()
    for medicine in medicines:
        _seed_stock(session, rng, depot, medicine, today)

    # Chronic repeat medicines: oral tablets/capsules that are neither controlled nor cold-chain.
    repeatable = [m for m in medicines if m.cd_schedule is None and not m.cold_chain
                  and m.pack_size and m.form in {"tablet", "capsule", "modified-release tablet",
                                                 "gastro-resistant capsule"}]
    otc = [m for m in medicines if not m.prescription_only]
    patient_hash = hash_password(DEMO_ACCOUNTS[Role.PATIENT][1])
    for n in range(PATIENT_COUNT):
        if n == 0:
            email, _, full = DEMO_ACCOUNTS[Role.PATIENT]
            given, family = full.split(" ", 1)
        else:
            given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
            email = f"patient{n:03d}@example.com"
        user = account(email, patient_hash, Role.PATIENT, f"{given} {family}")
        session.flush()
        dob = today - timedelta(days=rng.randint(18 * 365, 92 * 365))
        age = (today - dob).days // 365
        patient = PatientProfile(
            user_id=user.id, nhs_number=_nhs_number(rng), given_name=given, family_name=family,
            date_of_birth=dob, phone=f"07700 9{rng.randrange(10**5):05d}",
            nominated_pharmacy_id=depot.id,
            charge_exemption="A" if age >= 60 else (rng.choice([None, None, None, "E", "D"])),
            terms_accepted_at=datetime.now(UTC),
        )
        session.add(patient)
        lat, lon = _scatter(rng, 8.0)
        patient.addresses.append(Address(
            label="Home", line1=f"{rng.randint(1, 240)} {rng.choice(_STREETS)}", city="Leeds",
            postcode=f"{rng.choice(_POSTCODES)} {rng.randint(1, 9)}"
                     f"{rng.choice(_INWARD)}{rng.choice(_INWARD)}",
            latitude=lat, longitude=lon, delivery_notes=rng.choice(_SAFE_PLACES),
            is_default=True))
        for substance in rng.sample(_ALLERGENS, k=rng.choice([0, 0, 0, 1, 1, 2])):
            patient.allergies.append(Allergy(substance=substance, recorded_at=datetime.now(UTC)))
        session.flush()
        held = rng.sample(repeatable, k=rng.randint(1, 3))
        _seed_prescriptions(session, rng, patient, rng.choice(prescribers), held, today)
        _seed_orders(session, rng, patient, depot, held, otc, today, n)

    session.flush()
    audit.record(session, action="demo.seeded", entity_type="pharmacy", entity_id=depot.id,
                 after={"patients": PATIENT_COUNT, "medicines": len(medicines)})
    return SeedResult(True, formulary.medicines, PATIENT_COUNT)


def _seed_stock(session: Session, rng: random.Random, depot: Pharmacy, medicine: Medicine,
                today: date) -> None:
    """Two or three batches a medicine: one long-dated, the others mostly long-dated too, some
    near expiry and a few already expired."""
    for b in range(rng.randint(2, 3)):
        # The first batch is always long-dated, so every medicine can be ordered in the demo.
        roll = 1.0 if b == 0 else rng.random()
        if roll < 0.08:
            expiry = today - timedelta(days=rng.randint(1, 60))
        elif roll < 0.25:
            expiry = today + timedelta(days=rng.randint(5, 45))
        else:
            expiry = today + timedelta(days=rng.randint(120, 730))
        quantity = rng.randint(2, 30) * (medicine.pack_size or 10)
        batch = StockBatch(
            pharmacy_id=depot.id, medicine_id=medicine.id,
            lot_number=f"L{medicine.code[-5:]}{b}{rng.randrange(1000):03d}",
            expiry_date=expiry, quantity_on_hand=quantity,
            location="fridge" if medicine.cold_chain else (
                "cd-cabinet" if medicine.cd_schedule in (2, 3) else "shelf"),
            supplier=rng.choice(["Alliance Healthcare", "AAH Pharmaceuticals", "Phoenix"]),
            received_at=datetime.combine(today - timedelta(days=rng.randint(10, 200)), time(9),
                                         tzinfo=UTC),
        )
        session.add(batch)
        session.add(StockMovement(batch=batch, kind=MovementKind.RECEIVED,
                                  on_hand_change=quantity,
                                  reference=f"DN-{rng.randrange(10**6):06d}",
                                  occurred_at=batch.received_at))
        if medicine.cd_schedule == 2:  # the register starts with what is on the shelf
            session.flush()
            add_register_entry(session, pharmacy_id=depot.id, medicine_id=medicine.id,
                               kind=CDEntryKind.RECEIPT, quantity=quantity,
                               counterparty=batch.supplier or "supplier", actor=None,
                               batch_id=batch.id, reference="opening balance (demo)")
        if expiry < today:
            batch.status = BatchStatus.EXPIRED
            session.add(StockMovement(batch=batch, kind=MovementKind.EXPIRED,
                                      reason=f"expired on {expiry.isoformat()}"))


def _seed_prescriptions(session: Session, rng: random.Random, patient: PatientProfile,
                        prescriber: Prescriber, held: list[Medicine], today: date) -> None:
    issued = today - timedelta(days=rng.randint(20, 120))
    rx_id = _rx_short_id(rng)
    repeats_allowed = rng.choice([5, 6, 11])
    repeats_issued = min(repeats_allowed, rng.randint(1, 4))
    lines = [(m, m.pack_size or 28, "One daily") for m in held]
    prescription = Prescription(
        prescription_id=rx_id, patient_id=patient.id, prescriber_id=prescriber.id,
        pharmacy_id=patient.nominated_pharmacy_id, status=PrescriptionStatus.VERIFIED,
        prescription_type="repeat", issued_on=issued,
        received_at=datetime.combine(issued, time(10), tzinfo=UTC),
        repeats_allowed=repeats_allowed, repeats_issued=repeats_issued,
        source_bundle=_fhir_bundle(rx_id, patient, prescriber, lines, issued, repeats_allowed),
        validation_outcome={"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational",
             "diagnostics": "demo data: not validated"}]},
    )
    for n, (medicine, quantity, dosage) in enumerate(lines, start=1):
        prescription.items.append(PrescriptionItem(
            line_id=f"item-{n}", medicine_id=medicine.id, medication_code=medicine.code,
            medication_display=medicine.name, quantity=quantity, quantity_unit=medicine.pack_unit,
            dosage_text=dosage, supply_duration_days=28))
        patient.current_medications.append(CurrentMedication(
            medicine_id=medicine.id, description=medicine.name, started_on=issued))
    session.add(prescription)


def _seed_orders(session: Session, rng: random.Random, patient: PatientProfile,
                 depot: Pharmacy, held: list[Medicine], otc: list[Medicine], today: date,
                 n: int) -> None:
    """Roughly monthly repeat orders over the last three months, all delivered."""
    address = patient.addresses[0]
    for months_ago in range(3, 0, -1):
        if rng.random() < 0.2:
            continue
        day = today - timedelta(days=28 * months_ago + rng.randint(-3, 3))
        window_start = datetime.combine(day, time(rng.choice([10, 12, 14, 16])), tzinfo=UTC)
        order = Order(
            reference=f"D{day:%y%m}{n:03d}{months_ago}", patient_id=patient.id,
            pharmacy_id=depot.id, address_id=address.id, status=OrderStatus.DELIVERED,
            delivery_window_start=window_start,
            delivery_window_end=window_start + timedelta(hours=2),
            placed_at=window_start - timedelta(days=1),
        )
        subtotal = 0
        charge = 0
        for medicine in held:
            order.lines.append(OrderLine(medicine_id=medicine.id, quantity=1,
                                         unit_price_minor=0, line_total_minor=0,
                                         status="delivered"))
            if patient.charge_exemption is None:
                charge += PRESCRIPTION_CHARGE_MINOR
        if otc and rng.random() < 0.3:
            extra = rng.choice(otc)
            order.lines.append(OrderLine(medicine_id=extra.id, quantity=1,
                                         unit_price_minor=extra.unit_price_minor,
                                         line_total_minor=extra.unit_price_minor,
                                         status="delivered"))
            subtotal += extra.unit_price_minor
        order.subtotal_minor = subtotal
        order.prescription_charge_minor = charge
        order.delivery_fee_minor = 0
        order.total_minor = subtotal + charge
        session.add(order)
