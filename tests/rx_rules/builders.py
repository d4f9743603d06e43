"""Small FHIR bundles for the rule tests: valid by default, each part easy to change.

``rx(item(...), item(...))`` gives a valid collection bundle (patient, GMC prescriber, items)
as plain JSON; tests change the dicts before validating.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from typing import Any

from pharmacy.services.rx_rules import ValidationReport
from pharmacy.services.rx_rules import identifiers as ids
from pharmacy.services.rx_rules.fhir import CD_EXTENSION_URL

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
TODAY = date(2026, 11, 20)

# Formulary codes used across the tests (see pharmacy/data/formulary/formulary.csv).
GLICLAZIDE_80 = "42082911000001100"        # max 320 mg/day
PARACETAMOL_500 = "42109611000001109"      # max 4 g/day; previous code 322236009
PARACETAMOL_500_OLD = "322236009"
PARACETAMOL_SUSP = "39024611000001102"     # 250mg/5ml, max 4 g/day
CO_CODAMOL_30_500 = "42009811000001101"    # codeine+paracetamol, CD5
WARFARIN_5 = "42217911000001105"
ASPIRIN_75 = "42291811000001106"
IBUPROFEN_400 = "42104911000001104"        # M01AE01, max 2400 mg/day
RAMIPRIL_5 = "42381611000001104"           # C09AA05
LISINOPRIL_10 = "42376111000001109"        # C09AA03
LOSARTAN_50 = "42377011000001106"          # C09CA01
AMOXICILLIN_500 = "39732411000001106"      # J01CA04
CEFALEXIN_500 = "39694811000001102"        # J01DB01
METHADONE_1MG_ML = "36120811000001107"     # CD2, 1mg/ml
MORPHINE_MR_10 = "36126511000001106"       # CD2
OXYCODONE_5 = "42016011000001103"          # CD2
TEMAZEPAM_10 = "42137211000001105"         # CD3
TRAMADOL_50 = "42017811000001106"          # CD3, max 400 mg/day
DIAZEPAM_5 = "42128311000001104"           # CD4
ZOPICLONE_7_5 = "42139411000001100"        # CD4, max 7.5 mg/day
CODEINE_30 = "42010411000001105"           # CD5, max 240 mg/day
SIMVASTATIN_40 = "42382311000001100"
CLARITHROMYCIN_500 = "41946511000001109"
SERTRALINE_50 = "39704111000001102"        # N06AB06
PHENELZINE_15 = "42277211000001109"        # N06AF03
METFORMIN_500 = "42084911000001109"        # max 3000 mg/day
INDAPAMIDE_2_5 = "39696211000001108"       # max 2.5 mg/day
LEVOTHYROXINE_25 = "39698311000001101"     # 25micrograms, no maximum
BECLOMETASONE_100 = "35908111000001105"    # 100micrograms/dose
COLECALCIFEROL = "19973811000001109"       # 800units
SOLUBLE_PARACETAMOL_OLD = "322237000"      # previous code of soluble paracetamol
UNKNOWN_VALID_CODE = "428673006"           # a valid SCTID (the "tablet" unit), no medicine
TABLET = {"system": "http://snomed.info/sct", "code": "428673006", "unit": "tablet"}
ML = {"system": "http://snomed.info/sct", "code": "258773002", "unit": "ml"}

PATIENT_URL = "urn:uuid:00000000-0000-4000-8000-000000000001"
PRACTITIONER_URL = "urn:uuid:00000000-0000-4000-8000-000000000002"
VALID_PRESCRIPTION_ID = "998244-A83008-238DCD"


def quantity(value: Any, unit: dict[str, str] | None = None) -> dict[str, Any]:
    return {"value": value, **(unit if unit is not None else TABLET)}


def item(
    code: str = GLICLAZIDE_80,
    *,
    display: str | None = None,
    dose: Any = 1,
    dose_unit: dict[str, str] | None = None,
    frequency: Any = 1,
    period: Any = 1,
    period_unit: str = "d",
    qty: Any = 28,
    qty_unit: dict[str, str] | None = None,
    authored: str | None = "2026-11-20",
    validity: tuple[str | None, str | None] | None = None,
    repeats: int | None = None,
    schedule: str | None = None,
    words: str | None = None,
    supply_days: int | None = None,
    group: str | None = VALID_PRESCRIPTION_ID,
) -> dict[str, Any]:
    """A MedicationRequest (resource JSON) that passes every rule unless told otherwise."""
    mr: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [
            {"system": ids.SNOMED_SYSTEM, "code": code, **({"display": display} if display
                                                          else {})}]},
        "subject": {"reference": PATIENT_URL},
        "requester": {"reference": PRACTITIONER_URL},
        "dosageInstruction": [{
            "text": "as directed",
            "timing": {"repeat": {"frequency": frequency, "period": period,
                                  "periodUnit": period_unit}},
            "doseAndRate": [{"doseQuantity": quantity(dose, dose_unit)}],
        }],
        "dispenseRequest": {"quantity": quantity(qty, qty_unit)},
    }
    if authored is not None:
        mr["authoredOn"] = authored
    if group is not None:
        mr["groupIdentifier"] = {"system": ids.PRESCRIPTION_ID_SYSTEM, "value": group}
    if validity is not None:
        period_json = {k: v for k, v in zip(("start", "end"), validity, strict=True) if v}
        mr["dispenseRequest"]["validityPeriod"] = period_json
    if repeats is not None:
        mr["dispenseRequest"]["numberOfRepeatsAllowed"] = repeats
    if supply_days is not None:
        mr["dispenseRequest"]["expectedSupplyDuration"] = {
            "value": supply_days, "unit": "day", "system": "http://unitsofmeasure.org",
            "code": "d"}
    if schedule is not None or words is not None:
        subs: list[dict[str, Any]] = []
        if schedule is not None:
            subs.append({"url": "schedule", "valueCoding": {
                "system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug",
                "code": schedule}})
        if words is not None:
            subs.append({"url": "quantityWords", "valueString": words})
        mr["extension"] = [{"url": CD_EXTENSION_URL, "extension": subs}]
    return mr


def patient(nhs_number: str | None = "9434765870") -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": "pat-1",
                                "name": [{"family": "Test", "given": ["Pat"]}],
                                "birthDate": "1960-01-31"}
    if nhs_number is not None:
        resource["identifier"] = [{"system": ids.NHS_NUMBER_SYSTEM, "value": nhs_number}]
    return resource


def practitioner(*identifiers: tuple[str, str]) -> dict[str, Any]:
    pairs = identifiers or ((ids.GMC_SYSTEM, "6150129"),)
    return {"resourceType": "Practitioner", "id": "prac-1",
            "name": [{"family": "Doctor", "given": ["Dee"]}],
            "identifier": [{"system": s, "value": v} for s, v in pairs]}


def allergy(text: str | None = None, atc: str | None = None, *,
            clinical: str | None = None, verification: str | None = None) -> dict[str, Any]:
    code: dict[str, Any] = {}
    if text:
        code["text"] = text
    if atc:
        code["coding"] = [{"system": "http://www.whocc.no/atc", "code": atc}]
    resource: dict[str, Any] = {"resourceType": "AllergyIntolerance", "code": code,
                                "patient": {"reference": PATIENT_URL}}
    if clinical:
        resource["clinicalStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
            "code": clinical}]}
    if verification:
        resource["verificationStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
            "code": verification}]}
    return resource


def statement(code: str | None = None, *, text: str | None = None, atc: str | None = None,
              status: str = "active") -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": []}
    if code:
        concept["coding"].append({"system": ids.SNOMED_SYSTEM, "code": code})
    if atc:
        concept["coding"].append({"system": "http://www.whocc.no/atc", "code": atc})
    if text:
        concept["text"] = text
    if not concept["coding"]:
        del concept["coding"]
    return {"resourceType": "MedicationStatement", "status": status,
            "medicationCodeableConcept": concept, "subject": {"reference": PATIENT_URL}}


def rx(*items: dict[str, Any], patient_resource: dict[str, Any] | None = None,
       prescriber: dict[str, Any] | None = None, extra: tuple[dict[str, Any], ...] = (),
       bundle_type: str = "collection") -> dict[str, Any]:
    """A bundle: Patient, Practitioner, the items (default: one gliclazide), then ``extra``."""
    entries: list[dict[str, Any]] = [
        {"fullUrl": PATIENT_URL, "resource": patient_resource or patient()},
        {"fullUrl": PRACTITIONER_URL, "resource": prescriber or practitioner()},
    ]
    for n, mr in enumerate(items or (item(),), start=1):
        mr = copy.deepcopy(mr)
        mr.setdefault("id", f"mr-{n}")
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-1000000000{n:02d}",
                        "resource": mr})
    for n, resource in enumerate(extra, start=1):
        entries.append({"fullUrl": f"urn:uuid:00000000-0000-4000-8000-2000000000{n:02d}",
                        "resource": copy.deepcopy(resource)})
    return {"resourceType": "Bundle", "type": bundle_type, "entry": entries}


def rules(report: ValidationReport) -> list[str]:
    """The rule codes of a report, in order."""
    return [f.rule for f in report.findings]
