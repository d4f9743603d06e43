"""One or more tests per rule code of the spec, on small built bundles."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from pharmacy.services.rx_rules import Severity
from pharmacy.services.rx_rules import identifiers as ids

from .builders import (
    CO_CODAMOL_30_500,
    DIAZEPAM_5,
    GLICLAZIDE_80,
    METHADONE_1MG_ML,
    MORPHINE_MR_10,
    NOW,
    PARACETAMOL_500,
    PARACETAMOL_500_OLD,
    PATIENT_URL,
    PRACTITIONER_URL,
    SOLUBLE_PARACETAMOL_OLD,
    TEMAZEPAM_10,
    UNKNOWN_VALID_CODE,
    item,
    patient,
    practitioner,
    rules,
    rx,
)


def only(report, rule: str):
    """The single finding of a report, which must have ``rule``."""
    assert rules(report) == [rule], [f.diagnostics for f in report.findings]
    return report.findings[0]


def test_default_bundle_is_valid(check) -> None:
    report = check(rx())
    assert report.findings == () and report.is_valid
    assert report.evaluated_on == NOW.date()


# -- bundle-invalid --------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"", b"not json", b"{", "{'a': 1}", b"\xff\xfe\x00",
                                  b"[1, 2", "NaN", b'{"a": Infinity}'])
def test_not_json_is_bundle_invalid_without_parse(check, body) -> None:
    report = check(body)
    finding = only(report, "bundle-invalid")
    assert finding.severity is Severity.ERROR
    assert report.parsed is None and report.not_json


@pytest.mark.parametrize("body", ["[]", "1", '"Bundle"', "null", "true", "{}",
                                  '{"resourceType": "Patient"}',
                                  '{"resourceType": "Bundle"}',
                                  '{"resourceType": "Bundle", "type": "collection", "entry": 5}'])
def test_json_that_is_not_a_bundle(check, body: str) -> None:
    report = check(body)
    only(report, "bundle-invalid")
    assert report.parsed is None and not report.not_json


def test_resource_that_does_not_parse_as_fhir(check) -> None:
    bundle = rx()
    bundle["entry"][2]["resource"]["notAnElement"] = 1
    finding = only(check(bundle), "bundle-invalid")
    assert finding.expression == "Bundle.entry[2].resource.notAnElement"
    assert "notAnElement" in finding.diagnostics


def test_unknown_resource_type(check) -> None:
    bundle = rx()
    bundle["entry"][0]["resource"]["resourceType"] = "Patientt"
    finding = only(check(bundle), "bundle-invalid")
    assert finding.expression == "Bundle.entry[0].resource"


def test_data_type_is_not_a_resource(check) -> None:
    bundle = rx()
    bundle["entry"].append({"resource": {"resourceType": "Quantity", "value": 1}})
    only(check(bundle), "bundle-invalid")


def test_bad_date_is_bundle_invalid(check) -> None:
    only(check(rx(item(authored="2026-02-30"))), "bundle-invalid")
    only(check(rx(item(authored="2026-11-20T10:00:00"))), "bundle-invalid")  # no zone


def test_missing_required_element_is_bundle_invalid(check) -> None:
    bundle = rx()
    del bundle["entry"][2]["resource"]["status"]
    finding = only(check(bundle), "bundle-invalid")
    assert finding.expression == "Bundle.entry[2].resource.status"


@pytest.mark.parametrize("bundle_type", ["transaction", "searchset", "weird"])
def test_bundle_types_other_than_message_collection_document(check, bundle_type) -> None:
    finding = only(check(rx(bundle_type=bundle_type)), "bundle-invalid")
    assert finding.expression == "Bundle.type"


@pytest.mark.parametrize("bundle_type", ["message", "collection", "document"])
def test_accepted_bundle_types(check, bundle_type) -> None:
    assert rules(check(rx(bundle_type=bundle_type))) == []


def test_mapping_with_non_json_values(check) -> None:
    bundle = rx()
    bundle["entry"][0]["resource"]["birthDate"] = object()
    only(check(bundle), "bundle-invalid")
    only(check({1: "x"}), "bundle-invalid")


def test_str_bytes_and_mapping_give_the_same_answer(check) -> None:
    import json

    bundle = rx(item(dose=3, frequency=2))
    text = json.dumps(bundle)
    assert rules(check(bundle)) == rules(check(text)) == rules(check(text.encode())) == [
        "dose-above-maximum"]


# -- no-items ------------------------------------------------------------------------------

def test_no_items(check) -> None:
    bundle = rx()
    del bundle["entry"][2]
    finding = only(check(bundle), "no-items")
    assert finding.severity is Severity.ERROR


def test_no_items_still_checks_the_patient(check) -> None:
    bundle = rx(patient_resource=patient("9434765871"))
    del bundle["entry"][2]
    assert sorted(rules(check(bundle))) == ["no-items", "patient-identifier-invalid"]


def test_empty_bundle(check) -> None:
    assert rules(check({"resourceType": "Bundle", "type": "collection"})) == ["no-items"]


# -- reference-unresolved ------------------------------------------------------------------

def test_subject_does_not_resolve(check) -> None:
    mr = item()
    mr["subject"] = {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}
    finding = only(check(rx(mr)), "reference-unresolved")
    assert finding.expression == "Bundle.entry[2].resource.subject"
    assert finding.item_line_id == "mr-1"
    assert "Item 1 (Gliclazide 80mg tablets)" in finding.diagnostics


def test_requester_does_not_resolve(check) -> None:
    mr = item()
    mr["requester"] = {"reference": "Practitioner/nobody"}
    finding = only(check(rx(mr)), "reference-unresolved")
    assert finding.expression == "Bundle.entry[2].resource.requester"


def test_missing_requester(check) -> None:
    mr = item()
    del mr["requester"]
    only(check(rx(mr)), "reference-unresolved")


def test_subject_pointing_at_a_practitioner(check) -> None:
    mr = item()
    mr["subject"] = {"reference": PRACTITIONER_URL}
    finding = only(check(rx(mr)), "reference-unresolved")
    assert "Practitioner" in finding.diagnostics


def test_requester_pointing_at_the_patient(check) -> None:
    mr = item()
    mr["requester"] = {"reference": PATIENT_URL}
    only(check(rx(mr)), "reference-unresolved")


def test_identifier_only_reference_does_not_resolve(check) -> None:
    mr = item()
    mr["subject"] = {"identifier": {"system": ids.NHS_NUMBER_SYSTEM, "value": "9434765870"}}
    only(check(rx(mr)), "reference-unresolved")


def test_type_id_references(check) -> None:
    mr = item()
    mr["subject"] = {"reference": "Patient/pat-1"}
    mr["requester"] = {"reference": "Practitioner/prac-1"}
    assert rules(check(rx(mr))) == []


def test_absolute_url_references(check) -> None:
    bundle = rx()
    bundle["entry"][0]["fullUrl"] = "https://example.org/fhir/Patient/pat-1"
    bundle["entry"][2]["resource"]["subject"] = {"reference": "Patient/pat-1"}
    assert rules(check(bundle)) == []
    bundle["entry"][2]["resource"]["subject"] = {
        "reference": "https://example.org/fhir/Patient/pat-1"}
    assert rules(check(bundle)) == []


def test_type_id_needs_the_right_type(check) -> None:
    mr = item()
    mr["subject"] = {"reference": "Patient/prac-1"}
    only(check(rx(mr)), "reference-unresolved")


def _with_role(practitioner_reference: str | None) -> dict:
    role = {"resourceType": "PractitionerRole", "id": "role-1",
            "organization": {"reference": "urn:uuid:00000000-0000-4000-8000-3000000000ff"}}
    if practitioner_reference is not None:
        role["practitioner"] = {"reference": practitioner_reference}
    mr = item()
    mr["requester"] = {"reference": "PractitionerRole/role-1"}
    org = {"resourceType": "Organization", "id": "org-1", "name": "Surgery",
           "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code",
                           "value": "B86016"}]}
    bundle = rx(mr, extra=(role,))
    bundle["entry"].append({"fullUrl": "urn:uuid:00000000-0000-4000-8000-3000000000ff",
                            "resource": org})
    return bundle


def test_practitioner_role_to_practitioner(check) -> None:
    report = check(_with_role(PRACTITIONER_URL))
    assert rules(report) == []
    assert report.parsed.prescriber.organisation_ods_code == "B86016"
    assert report.parsed.prescriber.organisation_name == "Surgery"
    assert report.parsed.prescriber.family_name == "Doctor"


def test_practitioner_role_by_type_id(check) -> None:
    assert rules(check(_with_role("Practitioner/prac-1"))) == []


def test_practitioner_role_without_practitioner(check) -> None:
    finding = only(check(_with_role(None)), "reference-unresolved")
    assert finding.expression == "Bundle.entry[3].resource.practitioner"


def test_practitioner_role_with_dangling_practitioner(check) -> None:
    only(check(_with_role("Practitioner/ghost")), "reference-unresolved")


def test_practitioner_role_identifiers_do_not_replace_the_practitioners(check) -> None:
    bundle = _with_role(PRACTITIONER_URL)
    bundle["entry"][1]["resource"]["identifier"] = [
        {"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "555044403105"}]
    bundle["entry"][3]["resource"]["identifier"] = [
        {"system": ids.GMC_SYSTEM, "value": "6150129"}]
    only(check(bundle), "prescriber-identifier-missing")


# -- status-not-active / intent-not-order ------------------------------------------------

@pytest.mark.parametrize("status", ["on-hold", "cancelled", "completed", "entered-in-error",
                                    "stopped", "draft", "unknown", "ended", "Active"])
def test_status_not_active(check, status: str) -> None:
    mr = item()
    mr["status"] = status
    finding = only(check(rx(mr)), "status-not-active")
    assert finding.expression == "Bundle.entry[2].resource.status"
    assert status in finding.diagnostics


@pytest.mark.parametrize("intent", ["order", "original-order", "instance-order"])
def test_dispensable_intents(check, intent: str) -> None:
    mr = item()
    mr["intent"] = intent
    assert rules(check(rx(mr))) == []


@pytest.mark.parametrize("intent", ["proposal", "plan", "reflex-order", "filler-order",
                                    "option", "ORDER"])
def test_intent_not_order(check, intent: str) -> None:
    mr = item()
    mr["intent"] = intent
    only(check(rx(mr)), "intent-not-order")


def test_every_item_is_checked(check) -> None:
    first, second = item(), item(PARACETAMOL_500, frequency=4, qty=100)
    second["status"] = "on-hold"
    second["intent"] = "plan"
    report = check(rx(first, second))
    assert rules(report) == ["status-not-active", "intent-not-order"]
    assert {f.item_line_id for f in report.findings} == {"mr-2"}


# -- patient-identifier-invalid ----------------------------------------------------------

@pytest.mark.parametrize("nhs", ["9434765870", "943 476 5870", "9990548609"])
def test_valid_nhs_numbers(check, nhs: str) -> None:
    report = check(rx(patient_resource=patient(nhs)))
    assert rules(report) == []
    assert report.parsed.patient.nhs_number == nhs.replace(" ", "")


@pytest.mark.parametrize("nhs", ["9434765871", "943476587", "94347658700", "94347658X0",
                                 "9990548608", "١٢٣٤٥٦٧٨٩٠", "0000000001"])
def test_invalid_nhs_numbers(check, nhs: str) -> None:
    finding = only(check(rx(patient_resource=patient(nhs))), "patient-identifier-invalid")
    assert finding.expression == "Bundle.entry[0].resource.identifier[0]"
    assert nhs not in finding.diagnostics  # patient identifiers are not echoed


def test_nhs_number_identifier_without_value(check) -> None:
    resource = patient(None) | {"identifier": [{"system": ids.NHS_NUMBER_SYSTEM}]}
    only(check(rx(patient_resource=resource)), "patient-identifier-invalid")


def test_patient_without_nhs_number_has_nothing_to_check(check) -> None:
    assert rules(check(rx(patient_resource=patient(None)))) == []
    other = patient(None) | {"identifier": [{"system": "https://example.org/mrn",
                                             "value": "ABC"}]}
    report = check(rx(patient_resource=other))
    assert rules(report) == []
    assert report.parsed.patient.nhs_number is None
    assert report.parsed.patient.other_identifiers == (("https://example.org/mrn", "ABC"),)


# -- prescription-id-invalid -------------------------------------------------------------

@pytest.mark.parametrize("value", ["998244-A83008-238DCD", "A1B2C3-A83008-0004F+",
                                   "04F4C2-A99968-7F717P", "998244A83008238DCD",
                                   "998244-a83008-238dcd", "FF5436-0FCG71-00001"
                                   + ids.prescription_id_check_character("FF54360FCG7100001")])
def test_valid_prescription_ids(check, value: str) -> None:
    assert rules(check(rx(item(group=value)))) == []


@pytest.mark.parametrize("value", ["269CA9-A99968-4577BP", "998244-A83008-238DCE",
                                   "DC2C66-A1B2C3-23407B", "998244-A83008-238DC",
                                   "998244-A83008-238DCDD", "", "998244_A83008_238DCD",
                                   "A1B2C3-A83008-0004F*"])
def test_invalid_prescription_ids(check, value: str) -> None:
    mr = item(group=value or None)
    if not value:
        mr["groupIdentifier"] = {"system": ids.PRESCRIPTION_ID_SYSTEM}
    finding = only(check(rx(mr)), "prescription-id-invalid")
    assert finding.expression == "Bundle.entry[2].resource.groupIdentifier.value"


def test_prescription_id_reported_once_for_all_items(check) -> None:
    report = check(rx(item(group="998244-A83008-238DCE"),
                      item(PARACETAMOL_500, group="998244-A83008-238DCE")))
    assert rules(report) == ["prescription-id-invalid"]


def test_no_group_identifier_or_other_system(check) -> None:
    assert rules(check(rx(item(group=None)))) == []
    mr = item()
    mr["groupIdentifier"] = {"system": "https://example.org/rx", "value": "whatever"}
    assert rules(check(rx(mr))) == []


# -- prescriber-identifier-missing / -invalid --------------------------------------------

@pytest.mark.parametrize("system,value", [
    (ids.GMC_SYSTEM, "6150129"), (ids.GMC_SYSTEM, "C6150129"),
    (ids.GPHC_SYSTEM, "2083469"), (ids.NMC_SYSTEM, "19E4902G"),
    (ids.NPI_SYSTEM, "1234567893"), (ids.NPI_SYSTEM, "1558598797"),
    (ids.DEA_SYSTEM, "AP5836727"), (ids.DEA_SYSTEM, "AJ5184279"),
])
def test_valid_prescriber_identifiers(check, system: str, value: str) -> None:
    report = check(rx(prescriber=practitioner((system, value))))
    assert rules(report) == []
    assert report.parsed.prescriber.identifiers == ((system, value),)


@pytest.mark.parametrize("system,value", [
    (ids.GMC_SYSTEM, "615012"), (ids.GMC_SYSTEM, "61501290"), (ids.GMC_SYSTEM, "D6150129"),
    (ids.GPHC_SYSTEM, "3083469"), (ids.GPHC_SYSTEM, "208346"), (ids.GPHC_SYSTEM, "5012345"),
    (ids.NMC_SYSTEM, "19E4902"), (ids.NMC_SYSTEM, "1E94902G"),
    (ids.NPI_SYSTEM, "1234567890"), (ids.NPI_SYSTEM, "123456789"),
    (ids.DEA_SYSTEM, "AP5836728"), (ids.DEA_SYSTEM, "AB4523763"), (ids.DEA_SYSTEM, "A15836727"),
])
def test_invalid_prescriber_identifiers(check, system: str, value: str) -> None:
    finding = only(check(rx(prescriber=practitioner((system, value)))),
                   "prescriber-identifier-invalid")
    assert finding.expression == "Bundle.entry[1].resource.identifier[0]"
    assert value in finding.diagnostics


def test_prescriber_without_professional_identifier(check) -> None:
    prescriber = practitioner(("https://fhir.nhs.uk/Id/sds-user-id", "555044403105"),
                              ("https://fhir.nhs.uk/Id/gmp-number", "G1234567"))
    finding = only(check(rx(prescriber=prescriber)), "prescriber-identifier-missing")
    assert finding.expression == "Bundle.entry[1].resource.identifier"
    no_identifiers = practitioner()
    del no_identifiers["identifier"]
    only(check(rx(prescriber=no_identifiers)), "prescriber-identifier-missing")


def test_every_professional_identifier_is_checked(check) -> None:
    prescriber = practitioner((ids.GMC_SYSTEM, "6150129"), (ids.GPHC_SYSTEM, "5012345"),
                              (ids.DEA_SYSTEM, "AP5836728"))
    report = check(rx(prescriber=prescriber))
    assert rules(report) == ["prescriber-identifier-invalid"] * 2
    assert [f.expression for f in report.findings] == [
        "Bundle.entry[1].resource.identifier[1]", "Bundle.entry[1].resource.identifier[2]"]


def test_prescriber_checked_once_for_many_items(check) -> None:
    prescriber = practitioner((ids.GMC_SYSTEM, "123"))
    report = check(rx(item(), item(PARACETAMOL_500), prescriber=prescriber))
    assert rules(report) == ["prescriber-identifier-invalid"]


# -- medication-code-invalid / medication-unknown ----------------------------------------

@pytest.mark.parametrize("code", ["42082911000001101", "322237001", "39113611000001103",
                                  "12345", "0322237000", "3222370x0", "1234567890123456789"])
def test_medication_code_invalid(check, code: str) -> None:
    finding = only(check(rx(item(code))), "medication-code-invalid")
    assert finding.expression == (
        "Bundle.entry[2].resource.medicationCodeableConcept.coding[0].code")
    assert code in finding.diagnostics


def test_medication_code_in_wrong_partition(check) -> None:
    # 1234567012 is a valid Verhoeff number in partition 01 (a description id).
    from stdnum import verhoeff

    body = "123456701"
    code = body + verhoeff.calc_check_digit(body)
    assert verhoeff.is_valid(code) and code[-3:-1] == "01"
    only(check(rx(item(code))), "medication-code-invalid")


def test_no_snomed_code(check) -> None:
    mr = item()
    mr["medicationCodeableConcept"] = {"text": "Gliclazide 80mg tablets"}
    finding = only(check(rx(mr)), "medication-code-invalid")
    assert "no SNOMED" in finding.diagnostics


def test_medication_unknown(check) -> None:
    finding = only(check(rx(item(UNKNOWN_VALID_CODE))), "medication-unknown")
    assert UNKNOWN_VALID_CODE in finding.diagnostics
    assert finding.expression == "Bundle.entry[2].resource.medicationCodeableConcept"


def test_previous_dm_d_codes_are_known(check) -> None:
    report = check(rx(item(PARACETAMOL_500_OLD, frequency=4, qty=100),
                      item(SOLUBLE_PARACETAMOL_OLD)))
    assert "medication-unknown" not in rules(report)
    first = report.parsed.items[0]
    assert first.medication_code == PARACETAMOL_500_OLD
    assert first.formulary_code == PARACETAMOL_500


def test_second_snomed_coding_can_match(check) -> None:
    mr = item()
    mr["medicationCodeableConcept"]["coding"].insert(
        0, {"system": ids.SNOMED_SYSTEM, "code": UNKNOWN_VALID_CODE})
    assert rules(check(rx(mr))) == []


def test_medication_reference_to_contained_medication_resource(check) -> None:
    mr = item()
    del mr["medicationCodeableConcept"]
    mr["medicationReference"] = {"reference": "Medication/med-1"}
    med = {"resourceType": "Medication", "id": "med-1", "code": {"coding": [
        {"system": ids.SNOMED_SYSTEM, "code": GLICLAZIDE_80}]}}
    assert rules(check(rx(mr, extra=(med,)))) == []
    only(check(rx(mr)), "medication-code-invalid")  # the reference does not resolve


# -- dosage-missing / quantity-missing ---------------------------------------------------

def test_dosage_missing(check) -> None:
    mr = item()
    del mr["dosageInstruction"]
    finding = only(check(rx(mr)), "dosage-missing")
    assert finding.expression == "Bundle.entry[2].resource.dosageInstruction"


def test_dosage_with_only_timing_is_missing(check) -> None:
    mr = item()
    mr["dosageInstruction"] = [{"timing": {"repeat": {"frequency": 1, "period": 1,
                                                      "periodUnit": "d"}}}]
    only(check(rx(mr)), "dosage-missing")


def test_dosage_text_alone_is_enough(check) -> None:
    mr = item()
    mr["dosageInstruction"] = [{"text": "One tablet daily"}]
    assert rules(check(rx(mr))) == []


def test_structured_dose_alone_is_enough(check) -> None:
    mr = item()
    del mr["dosageInstruction"][0]["text"]
    assert rules(check(rx(mr))) == []


def test_quantity_missing(check) -> None:
    mr = item()
    del mr["dispenseRequest"]["quantity"]
    finding = only(check(rx(mr)), "quantity-missing")
    assert finding.expression == "Bundle.entry[2].resource.dispenseRequest.quantity"
    mr = item()
    del mr["dispenseRequest"]
    only(check(rx(mr)), "quantity-missing")
    mr = item()
    del mr["dispenseRequest"]["quantity"]["value"]
    only(check(rx(mr)), "quantity-missing")


def test_zero_quantity_is_missing(check) -> None:
    only(check(rx(item(qty=0))), "quantity-missing")


# -- authored-in-future ------------------------------------------------------------------

def test_authored_within_five_minutes_grace(check) -> None:
    authored = (NOW + timedelta(minutes=5)).isoformat()
    assert rules(check(rx(item(authored=authored)))) == []


def test_authored_after_the_grace(check) -> None:
    authored = (NOW + timedelta(minutes=5, seconds=1)).isoformat()
    finding = only(check(rx(item(authored=authored))), "authored-in-future")
    assert finding.expression == "Bundle.entry[2].resource.authoredOn"


def test_authored_in_another_time_zone(check) -> None:
    # 13:06 in Paris is 12:06 UTC: six minutes after NOW.
    only(check(rx(item(authored="2026-11-20T13:06:00+01:00"))), "authored-in-future")
    assert rules(check(rx(item(authored="2026-11-20T13:04:00+01:00")))) == []


def test_date_only_authored_today_is_not_in_future(check) -> None:
    late = datetime(2026, 11, 20, 0, 1, tzinfo=UTC)
    assert rules(check(rx(item(authored="2026-11-20")), now=late)) == []


def test_date_only_authored_tomorrow_is_in_future(check) -> None:
    late = datetime(2026, 11, 20, 23, 59, tzinfo=UTC)
    only(check(rx(item(authored="2026-11-21")), now=late), "authored-in-future")


def test_today_is_the_date_in_london(check) -> None:
    # 23:30 UTC on 30 June is 00:30 on 1 July in London (BST).
    now = datetime(2026, 6, 30, 23, 30, tzinfo=UTC)
    assert rules(check(rx(item(authored="2026-07-01")), now=now)) == []
    now = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # GMT: still 31 December
    only(check(rx(item(authored="2027-01-01")), now=now), "authored-in-future")


def test_partial_authored_dates(check) -> None:
    assert rules(check(rx(item(authored="2026-11")))) == []
    assert rules(check(rx(item(authored="2026")))) == []
    only(check(rx(item(authored="2026-12"))), "authored-in-future")
    only(check(rx(item(authored="2027"))), "authored-in-future")


# -- not-yet-valid -----------------------------------------------------------------------

def test_validity_starts_today(check) -> None:
    assert rules(check(rx(item(validity=("2026-11-20", None))))) == []


def test_not_yet_valid(check) -> None:
    finding = only(check(rx(item(validity=("2026-11-21", None)))), "not-yet-valid")
    assert finding.expression == "Bundle.entry[2].resource.dispenseRequest.validityPeriod.start"
    assert "2026-11-21" in finding.diagnostics


def test_not_yet_valid_datetime_start_in_london(check) -> None:
    # 2026-11-21T00:30+01:00 is 23:30 UTC on the 20th: still today in London (GMT).
    assert rules(check(rx(item(validity=("2026-11-21T00:30:00+01:00", None))))) == []
    only(check(rx(item(validity=("2026-11-21T00:30:00Z", None)))), "not-yet-valid")


# -- expired (six months) ----------------------------------------------------------------

@pytest.mark.parametrize("start,last_valid", [
    ("2026-05-21", "2026-11-20"),   # 21 May -> 20 Nov is the last day
    ("2026-05-31", "2026-11-30"),   # 30 Nov exists
    ("2026-03-31", "2026-09-30"),   # 31 Sep does not: last day of September
    ("2025-08-31", "2026-02-28"),   # 31 Feb does not: 28 Feb (research example)
    ("2025-08-29", "2026-02-28"),   # 29 Feb 2026 does not exist
    ("2025-08-28", "2026-02-27"),
    ("2023-08-29", "2024-02-28"),   # 29 Feb 2024 exists: minus one day
    ("2023-08-31", "2024-02-29"),
    ("2025-01-15", "2025-07-14"),   # research example
    ("2026-01-31", "2026-07-30"),
])
def test_six_month_validity_boundary(check, start: str, last_valid: str) -> None:
    last = datetime.fromisoformat(last_valid).replace(hour=12, tzinfo=UTC)
    assert rules(check(rx(item(authored=start)), now=last)) == []
    finding = only(check(rx(item(authored=start)), now=last + timedelta(days=1)), "expired")
    assert last_valid in finding.diagnostics


def test_six_months_run_from_the_later_of_authored_and_start(check) -> None:
    now = datetime(2027, 3, 1, 12, tzinfo=UTC)
    assert rules(check(rx(item(authored="2026-06-01", validity=("2026-10-01", None))),
                       now=now)) == []
    only(check(rx(item(authored="2026-08-01", validity=("2026-06-01", None))),
               now=datetime(2027, 2, 1, 12, tzinfo=UTC)), "expired")


def test_expired_validity_end(check) -> None:
    bundle = rx(item(validity=("2026-11-01", "2026-11-19")))
    finding = only(check(bundle), "expired")
    assert finding.expression == "Bundle.entry[2].resource.dispenseRequest.validityPeriod.end"
    assert rules(check(rx(item(validity=("2026-11-01", "2026-11-20"))))) == []


def test_validity_end_as_datetime(check) -> None:
    # EPS writes the end as 23:59:59 on the last valid day.
    assert rules(check(rx(item(validity=("2026-11-01", "2026-11-20T23:59:59+00:00"))))) == []
    only(check(rx(item(validity=("2026-11-01", "2026-11-19T23:59:59+00:00")))), "expired")


def test_both_expiry_reasons_give_one_finding(check) -> None:
    now = datetime(2027, 6, 1, 12, tzinfo=UTC)
    finding = only(check(rx(item(validity=("2026-11-20", "2027-01-01"))), now=now), "expired")
    assert "six-month" in finding.diagnostics and "2027-01-01" in finding.diagnostics


def test_schedule_5_uses_six_months(check) -> None:
    now = datetime(2027, 1, 20, 12, tzinfo=UTC)
    assert rules(check(rx(item(CO_CODAMOL_30_500, dose=2, frequency=4, qty=100)),
                       now=now)) == []


@pytest.mark.parametrize("authored,now,expired", [
    ("2026-03", datetime(2026, 9, 30, 12, tzinfo=UTC), False),  # from 31 March at the latest
    ("2026-03", datetime(2026, 10, 1, 12, tzinfo=UTC), True),
    ("2019", datetime(2026, 11, 26, 12, tzinfo=UTC), True),
])
def test_a_date_given_as_a_month_or_a_year_counts_from_its_last_day(
        check, authored: str, now: datetime, expired: bool) -> None:
    found = rules(check(rx(item(authored=authored)), now=now))
    assert ("expired" in found) is expired


def test_a_controlled_drug_dated_only_by_month_still_expires(check) -> None:
    mr = _cd2(authored="2019-03")
    assert "cd-expired" in rules(check(rx(mr)))


def test_no_dates_no_expiry(check) -> None:
    assert rules(check(rx(item(authored=None)), now=datetime(2030, 1, 1, tzinfo=UTC))) == []


# -- cd-expired --------------------------------------------------------------------------

def _cd2(**kwargs) -> dict:
    defaults = {"dose": 10, "dose_unit": {"unit": "ml"}, "frequency": 1, "qty": 140,
                "qty_unit": {"unit": "ml"}, "words": "one hundred and forty"}
    return item(METHADONE_1MG_ML, **(defaults | kwargs))


@pytest.mark.parametrize("code,schedule", [(METHADONE_1MG_ML, 2), (TEMAZEPAM_10, 3),
                                           (DIAZEPAM_5, 4)])
def test_cd_28_day_window(check, code: str, schedule: int) -> None:
    mr = item(code, words="fourteen", qty=14, authored="2026-11-01")
    day_28 = datetime(2026, 11, 29, 22, tzinfo=UTC)
    assert rules(check(rx(mr), now=day_28)) == []
    finding = only(check(rx(mr), now=day_28 + timedelta(days=1)), "cd-expired")
    assert f"Schedule {schedule}" in finding.diagnostics and "2026-11-29" in finding.diagnostics


def test_cd_28_days_from_later_start(check) -> None:
    mr = _cd2(authored="2026-11-01", validity=("2026-11-10", None))
    assert rules(check(rx(mr), now=datetime(2026, 12, 8, tzinfo=UTC))) == []
    only(check(rx(mr), now=datetime(2026, 12, 9, tzinfo=UTC)), "cd-expired")


def test_cd_window_across_the_clock_change(check) -> None:
    # Appropriate date 2026-03-01; day 28 is 2026-03-29, the day BST starts.
    mr = _cd2(authored="2026-03-01")
    assert rules(check(rx(mr), now=datetime(2026, 3, 29, 22, 59, tzinfo=UTC))) == []
    only(check(rx(mr), now=datetime(2026, 3, 29, 23, 0, tzinfo=UTC)), "cd-expired")


def test_cd_schedule_from_the_extension_when_formulary_has_none(check) -> None:
    mr = item(GLICLAZIDE_80, schedule="CD3", authored="2026-10-01")
    assert sorted(rules(check(rx(mr)))) == ["cd-expired", "cd-quantity-words-missing"]
    assert check(rx(mr)).parsed.items[0].cd_schedule == 3


def test_formulary_schedule_wins_over_the_extension(check) -> None:
    # Methadone is CD2 in the formulary; an extension claiming CD5 does not relax the rules.
    mr = item(METHADONE_1MG_ML, schedule="CD5", dose=10, dose_unit={"unit": "ml"},
              qty=140, qty_unit={"unit": "ml"})
    assert rules(check(rx(mr))) == ["cd-quantity-words-missing"]


def test_cd_expired_and_end_date_together(check) -> None:
    mr = _cd2(authored="2026-10-01", validity=("2026-10-01", "2026-10-29"))
    assert sorted(rules(check(rx(mr)))) == ["cd-expired", "expired"]


# -- cd-repeats-not-allowed / cd-quantity-words-missing ---------------------------------

@pytest.mark.parametrize("code", [METHADONE_1MG_ML, TEMAZEPAM_10])
def test_cd_repeats_not_allowed(check, code: str) -> None:
    mr = item(code, words="fourteen", qty=14, repeats=2)
    finding = only(check(rx(mr)), "cd-repeats-not-allowed")
    assert finding.expression == (
        "Bundle.entry[2].resource.dispenseRequest.numberOfRepeatsAllowed")


def test_cd_zero_repeats_allowed(check) -> None:
    assert rules(check(rx(_cd2(repeats=0)))) == []


def test_schedule_4_may_repeat(check) -> None:
    assert rules(check(rx(item(DIAZEPAM_5, qty=14, repeats=3)))) == []


def test_cd_quantity_words_missing_without_extension(check) -> None:
    finding = only(check(rx(item(MORPHINE_MR_10, frequency=2, qty=28))),
                   "cd-quantity-words-missing")
    assert finding.severity is Severity.ERROR
    assert finding.expression == "Bundle.entry[2].resource.extension"


def test_cd_quantity_words_blank(check) -> None:
    only(check(rx(item(MORPHINE_MR_10, frequency=2, qty=28, words="  "))),
         "cd-quantity-words-missing")


def test_schedule_4_and_5_need_no_words(check) -> None:
    assert rules(check(rx(item(DIAZEPAM_5, qty=14)))) == []
    assert rules(check(rx(item(CO_CODAMOL_30_500, dose=2, frequency=4, qty=100)))) == []


# -- cd-supply-over-30-days --------------------------------------------------------------

def test_cd_supply_exactly_30_days(check) -> None:
    assert rules(check(rx(item(MORPHINE_MR_10, frequency=2, qty=60, words="sixty")))) == []


def test_cd_supply_over_30_days(check) -> None:
    finding = only(check(rx(item(MORPHINE_MR_10, frequency=2, qty=62, words="sixty two"))),
                   "cd-supply-over-30-days")
    assert finding.severity is Severity.WARNING
    assert "31 days" in finding.diagnostics


def test_cd_supply_of_liquid(check) -> None:
    # Methadone 1mg/ml: 30 ml a day, 930 ml is 31 days.
    assert rules(check(rx(_cd2(dose=30, qty=900, words="nine hundred")))) == []
    only(check(rx(_cd2(dose=30, qty=930, words="nine hundred and thirty"))),
         "cd-supply-over-30-days")


@pytest.mark.parametrize("words,qty,mismatch", [
    ("one hundred and forty", 140, False), ("One hundred and forty (140) millilitres", 140,
                                             False),
    ("one hundred and fourteen", 140, True), ("fourteen", 140, True),
    ("a hundred and forty", 140, False), ("hundred and forty", 140, False),  # unclear: left
    ("one hundred and forty point five", 140, False),
])
def test_cd_quantity_in_words_must_agree_with_the_figures(
        check, words: str, qty: int, mismatch: bool) -> None:
    found = rules(check(rx(_cd2(qty=qty, words=words))))
    assert found == (["cd-quantity-words-mismatch"] if mismatch else [])
    if mismatch:
        finding = only(check(rx(_cd2(qty=qty, words=words))), "cd-quantity-words-mismatch")
        assert finding.severity is Severity.WARNING and str(qty) in finding.diagnostics


def test_cd_supply_with_mass_dose_and_tablet_quantity(check) -> None:
    # Morphine 10mg tablets, 20 mg twice a day = 4 tablets a day: 124 tablets = 31 days.
    mg = {"system": "http://unitsofmeasure.org", "code": "mg", "unit": "mg"}
    mr = item(MORPHINE_MR_10, dose=20, dose_unit=mg, frequency=2, qty=124, words="x")
    only(check(rx(mr)), "cd-supply-over-30-days")


def test_schedule_4_supply_over_30_days(check) -> None:
    only(check(rx(item(DIAZEPAM_5, frequency=1, qty=56))), "cd-supply-over-30-days")


def test_schedule_5_supply_is_not_limited(check) -> None:
    assert rules(check(rx(item(CO_CODAMOL_30_500, dose=2, frequency=4, qty=400)))) == []


def test_cd_supply_from_expected_duration_when_dose_unknown(check) -> None:
    mr = item(DIAZEPAM_5, qty=60, supply_days=60)
    mr["dosageInstruction"] = [{"text": "one when required"}]
    only(check(rx(mr)), "cd-supply-over-30-days")
    mr["dispenseRequest"]["expectedSupplyDuration"]["value"] = 30
    assert rules(check(rx(mr))) == []


# -- dose-above-maximum ------------------------------------------------------------------

def test_dose_at_maximum(check) -> None:
    # Paracetamol 500mg: 2 tablets four times a day = 4 g, the maximum.
    assert rules(check(rx(item(PARACETAMOL_500, dose=2, frequency=4, qty=100)))) == []


def test_dose_above_maximum_count(check) -> None:
    finding = only(check(rx(item(PARACETAMOL_500, dose=2, frequency=6, qty=100))),
                   "dose-above-maximum")
    assert finding.severity is Severity.WARNING
    assert "6 g" in finding.diagnostics and "4 g" in finding.diagnostics
    assert finding.expression == "Bundle.entry[2].resource.dosageInstruction"


@pytest.mark.parametrize("value,unit,above", [
    (1, "g", False), (1.5, "g", True), (1000, "mg", False), (1001, "mg", True),
    (1000000, "ug", False), (1000001, "ug", True),
])
def test_dose_above_maximum_mass_units(check, value, unit, above) -> None:
    ucum = {"system": "http://unitsofmeasure.org", "code": unit, "unit": unit}
    report = check(rx(item(PARACETAMOL_500, dose=value, dose_unit=ucum, frequency=4,
                           qty=100)))
    assert rules(report) == (["dose-above-maximum"] if above else [])


def test_dose_per_period_units(check) -> None:
    # Gliclazide max 320 mg: 80 mg every 6 hours = 320 mg; every 5 hours = 384 mg.
    assert rules(check(rx(item(dose=1, frequency=1, period=6, period_unit="h")))) == []
    only(check(rx(item(dose=1, frequency=1, period=5, period_unit="h"))), "dose-above-maximum")
    assert rules(check(rx(item(dose=28, frequency=1, period=1, period_unit="wk")))) == []
    only(check(rx(item(dose=29, frequency=1, period=1, period_unit="wk"))),
         "dose-above-maximum")


def test_dose_of_oral_suspension(check) -> None:
    # Paracetamol 250mg/5ml: 20 ml four times a day = 4 g; 25 ml = 5 g.
    ml = {"system": "http://unitsofmeasure.org", "code": "mL", "unit": "ml"}
    bundle = rx(item("39024611000001102", dose=20, dose_unit=ml, frequency=4, qty=500,
                     qty_unit=ml))
    assert rules(check(bundle)) == []
    bundle = rx(item("39024611000001102", dose=25, dose_unit=ml, frequency=4, qty=500,
                     qty_unit=ml))
    only(check(bundle), "dose-above-maximum")


def test_dose_with_fractional_maximum(check) -> None:
    # Indapamide 2.5 mg maximum; one tablet twice a day is 5 mg.
    assert rules(check(rx(item("39696211000001108")))) == []
    only(check(rx(item("39696211000001108", frequency=2))), "dose-above-maximum")


def test_dose_is_per_item(check) -> None:
    # Two paracetamol items of 3 g each: each is under the maximum on its own.
    report = check(rx(item(PARACETAMOL_500, dose=2, frequency=3, qty=100),
                      item(PARACETAMOL_500, dose=2, frequency=3, qty=100)))
    assert rules(report) == ["duplicate-therapy"]


def test_concurrent_dosages_are_summed(check) -> None:
    mr = item(PARACETAMOL_500, dose=2, frequency=3, qty=100)
    extra = copy.deepcopy(mr["dosageInstruction"][0])
    mr["dosageInstruction"][0]["sequence"] = extra["sequence"] = 1
    mr["dosageInstruction"].append(extra)
    only(check(rx(mr)), "dose-above-maximum")  # 3 g + 3 g
    extra["sequence"] = 2
    assert rules(check(rx(mr))) == []  # one course after the other: 3 g a day


def test_unreadable_dose_is_not_checked(check) -> None:
    mr = item(PARACETAMOL_500, dose=20, frequency=4, qty=100)
    del mr["dosageInstruction"][0]["timing"]
    assert rules(check(rx(mr))) == []
    mr = item(PARACETAMOL_500, dose=20, dose_unit={"unit": "drop"}, frequency=4, qty=100)
    only(check(rx(mr)), "dose-above-maximum")  # any other unit is a count of dose units


def test_no_maximum_in_formulary(check) -> None:
    assert rules(check(rx(item("39698311000001101", dose=100, frequency=10)))) == []


def test_parsed_daily_dose(check) -> None:
    report = check(rx(item(PARACETAMOL_500, dose=2, frequency=4, qty=100)))
    assert report.parsed.items[0].daily_dose_mg == 4000
    assert report.parsed.items[0].supply_duration_days == 12


# -- severity and report shape -----------------------------------------------------------

def test_warnings_keep_the_prescription_valid(check) -> None:
    report = check(rx(item(PARACETAMOL_500, dose=2, frequency=6, qty=100)))
    assert report.is_valid and len(report.warnings) == 1
    issue = report.to_operation_outcome()["issue"][0]
    assert issue["severity"] == "warning"
    assert issue["details"]["coding"][0]["code"] == "dose-above-maximum"


def test_all_findings_are_reported(check) -> None:
    mr = item(TEMAZEPAM_10, qty=60, repeats=1, authored="2026-12-01",
              group="998244-A83008-238DCE")
    mr["status"] = "draft"
    mr["intent"] = "plan"
    del mr["dosageInstruction"]
    report = check(rx(mr, patient_resource=patient("9434765871"),
                      prescriber=practitioner((ids.GMC_SYSTEM, "x"))))
    assert sorted(rules(report)) == sorted([
        "patient-identifier-invalid", "prescription-id-invalid",
        "prescriber-identifier-invalid", "status-not-active", "intent-not-order",
        "dosage-missing", "authored-in-future", "cd-repeats-not-allowed",
        "cd-quantity-words-missing"])
    assert all(f.diagnostics for f in report.findings)
    assert len(report.to_operation_outcome()["issue"]) == len(report.findings)


def test_naive_now_is_taken_as_utc(check) -> None:
    assert rules(check(rx(), now=NOW.replace(tzinfo=None))) == []


# -- interface details -------------------------------------------------------------------

@pytest.mark.parametrize("value", [[], [1, 2], 5, 2.5, None, True])
def test_parsed_json_that_is_not_an_object(check, value) -> None:
    # The intake endpoint passes what json.loads gave it; a list is JSON, not "not JSON".
    report = check(value)
    assert rules(report) == ["bundle-invalid"] and not report.not_json


def test_prescription_level_findings_name_no_item(check) -> None:
    report = check(rx(prescriber=practitioner((ids.GMC_SYSTEM, "1")),
                      patient_resource=patient("9434765871")))
    assert {f.item_line_id for f in report.findings} == {None}
    assert "The prescriber Dee Doctor" in report.findings[1].diagnostics


def test_cd_expired_points_at_the_later_date(check) -> None:
    mr = _cd2(authored="2026-09-01", validity=("2026-10-01", None))
    finding = only(check(rx(mr)), "cd-expired")
    assert finding.expression == "Bundle.entry[2].resource.dispenseRequest.validityPeriod.start"
    assert "2026-10-01" in finding.diagnostics


def test_parsed_item_display_is_the_matched_codings(check) -> None:
    mr = item(display="Gliclazide 80mg tablets")
    mr["medicationCodeableConcept"]["text"] = "gliclazide"
    parsed = check(rx(mr)).parsed.items[0]
    assert parsed.medication_display == "Gliclazide 80mg tablets"
    assert parsed.dosage_text == "as directed"
    assert parsed.status == "active" and parsed.intent == "order"
    assert parsed.repeats_allowed == 0 and parsed.cd_schedule is None


def test_parsed_survives_errors(check) -> None:
    mr = item(UNKNOWN_VALID_CODE, repeats=2)
    mr["status"] = "cancelled"
    report = check(rx(mr))
    assert report.parsed is not None and report.parsed.items[0].formulary_code is None
    assert report.parsed.items[0].repeats_allowed == 2
    assert report.parsed.items[0].medication_code == UNKNOWN_VALID_CODE


def test_line_ids(check) -> None:
    first, second, third = item(), item(PARACETAMOL_500), item(PARACETAMOL_500)
    bundle = rx(first, second, third)
    del bundle["entry"][2]["resource"]["id"]
    bundle["entry"][2]["resource"]["identifier"] = [{"system": "https://x", "value": "L1"}]
    del bundle["entry"][3]["resource"]["id"]
    bundle["entry"][4]["resource"]["id"] = "mr-3"
    report = check(bundle)
    assert [i.line_id for i in report.parsed.items] == ["L1", "item-2", "mr-3"]
