"""Build FHIR R4 prescription bundles for tests, with valid identifiers unless told otherwise."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from stdnum.gb import nhs
from stdnum.iso7064 import mod_37_2

EPS_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+"
_counter = itertools.count(1)


def prescription_id(n: int | None = None) -> str:
    """A valid EPS short-form prescription id (ISO 7064 MOD 37-2 check character)."""
    n = next(_counter) if n is None else n
    body = f"A{n:05X}B86016{n * 7919 % 16**5:05X}"[:17]
    check = mod_37_2.calc_check_digit(body, alphabet=EPS_ALPHABET)
    full = body + check
    return f"{full[:6]}-{full[6:12]}-{full[12:]}"


def nhs_number(seed: int) -> str:
    stem = f"999{seed % 10**6:06d}"
    for digit in "0123456789":
        if nhs.is_valid(stem + digit):
            return stem + digit
    return nhs_number(seed + 1)


@dataclass
class Item:
    code: str
    display: str
    quantity: float
    unit: str = "tablet"
    per_day: float = 1
    repeats: int = 0
    supply_days: int = 28
    cd_schedule: str | None = None
    quantity_words: str | None = None
    dose_unit: str = "tablet"


SIMVASTATIN_40 = Item("42382311000001100", "Simvastatin 40mg tablets", 28)
CLARITHROMYCIN_500 = Item("41946511000001109", "Clarithromycin 500mg tablets", 14, per_day=2,
                          supply_days=7)
AMLODIPINE_5 = Item("39732011000001102", "Amlodipine 5mg tablets", 28)
METHADONE_CD2 = Item("36120811000001107", "Methadone 1mg/ml oral solution sugar free", 420,
                     unit="ml", per_day=30, supply_days=14, dose_unit="ml",
                     cd_schedule="CD2", quantity_words="four hundred and twenty")


def bundle(*items: Item, rx_id: str | None = None, nhs: str | None = None,
           authored: date | None = None, gmc: str = "C1234567",
           allergies: tuple[str, ...] = (), course: str = "acute") -> dict[str, Any]:
    authored = authored or date.today()
    patient_url, doctor_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    rx_id = rx_id or prescription_id()
    entries: list[dict[str, Any]] = [
        {"fullUrl": patient_url, "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number",
                            "value": nhs or nhs_number(hash(rx_id) % 10**6)}],
            "name": [{"family": "Testpatient", "given": ["Tess"]}],
            "birthDate": "1961-04-12"}},
        {"fullUrl": doctor_url, "resource": {
            "resourceType": "Practitioner",
            "identifier": [{"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": gmc}],
            "name": [{"family": "Okafor", "given": ["Helen"]}]}},
    ]
    for substance in allergies:
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "code": "active"}]},
            "code": {"text": substance}, "patient": {"reference": patient_url}}})
    for n, item in enumerate(items, start=1):
        request: dict[str, Any] = {
            "resourceType": "MedicationRequest", "id": f"line-{n}", "status": "active",
            "intent": "original-order" if item.repeats else "order",
            "medicationCodeableConcept": {"coding": [{
                "system": "http://snomed.info/sct", "code": item.code,
                "display": item.display}]},
            "subject": {"reference": patient_url}, "requester": {"reference": doctor_url},
            "authoredOn": authored.isoformat(),
            "groupIdentifier": {"system": "https://fhir.nhs.uk/Id/prescription-order-number",
                                "value": rx_id},
            "courseOfTherapyType": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                "code": course}]},
            "dosageInstruction": [{
                "text": f"{item.per_day:g} {item.dose_unit} a day",
                "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": item.per_day,
                                                  "unit": item.dose_unit}}]}],
            "dispenseRequest": {
                "quantity": {"value": item.quantity, "unit": item.unit},
                "expectedSupplyDuration": {"value": item.supply_days, "unit": "day",
                                           "system": "http://unitsofmeasure.org", "code": "d"},
                "numberOfRepeatsAllowed": item.repeats},
        }
        if item.cd_schedule:
            sub = [{"url": "schedule", "valueCoding": {
                "system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug",
                "code": item.cd_schedule}}]
            if item.quantity_words:
                sub.append({"url": "quantityWords", "valueString": item.quantity_words})
            request["extension"] = [{
                "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug",
                "extension": sub}]
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": request})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}
