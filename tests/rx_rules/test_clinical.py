"""interaction, allergy and duplicate-therapy warnings, driven by the formulary data."""

from __future__ import annotations

import dataclasses

import pytest

from pharmacy.services.rx_rules import (
    FormularyView,
    InteractionEntry,
    Severity,
    validate_bundle,
)

from .builders import (
    AMOXICILLIN_500,
    ASPIRIN_75,
    CEFALEXIN_500,
    CLARITHROMYCIN_500,
    CO_CODAMOL_30_500,
    GLICLAZIDE_80,
    IBUPROFEN_400,
    LISINOPRIL_10,
    LOSARTAN_50,
    NOW,
    PARACETAMOL_500,
    PARACETAMOL_500_OLD,
    PHENELZINE_15,
    RAMIPRIL_5,
    SERTRALINE_50,
    SIMVASTATIN_40,
    WARFARIN_5,
    allergy,
    item,
    rules,
    rx,
    statement,
)


def findings_of(report, rule: str):
    return [f for f in report.findings if f.rule == rule]


# -- interaction -------------------------------------------------------------------------

def test_interaction_by_ingredient_names(check) -> None:
    report = check(rx(item(WARFARIN_5), item(ASPIRIN_75)))
    [finding] = findings_of(report, "interaction")
    assert rules(report) == ["interaction"]
    assert finding.severity is Severity.WARNING
    assert "Warfarin 5mg tablets" in finding.diagnostics
    assert "Aspirin 75mg dispersible tablets" in finding.diagnostics
    assert "major" in finding.diagnostics and "bleeding" in finding.diagnostics
    assert finding.item_line_id == "mr-1"
    assert finding.expression == "Bundle.entry[2].resource.medicationCodeableConcept"


def test_interaction_order_does_not_matter(check) -> None:
    assert rules(check(rx(item(ASPIRIN_75), item(WARFARIN_5)))) == ["interaction"]


def test_interaction_by_atc_prefix(check) -> None:
    # "warfarin,M01A": ibuprofen is M01AE01.
    report = check(rx(item(WARFARIN_5), item(IBUPROFEN_400, frequency=3, qty=84)))
    [finding] = findings_of(report, "interaction")
    assert "warfarin with M01A" in finding.diagnostics


def test_interaction_atc_class_on_both_sides(check) -> None:
    # "N06AB,N06AF": sertraline N06AB06 with phenelzine N06AF03, contraindicated.
    report = check(rx(item(SERTRALINE_50), item(PHENELZINE_15)))
    [finding] = findings_of(report, "interaction")
    assert "contraindicated" in finding.diagnostics
    assert finding.severity is Severity.WARNING  # the spec's severity for every interaction


def test_interaction_with_current_medicine_by_code(check) -> None:
    report = check(rx(item(CLARITHROMYCIN_500, frequency=2, qty=14),
                      extra=(statement(SIMVASTATIN_40),)))
    [finding] = findings_of(report, "interaction")
    assert "current medicine Simvastatin 40mg tablets" in finding.diagnostics
    assert report.parsed.patient.current_medication_codes == (SIMVASTATIN_40,)


def test_interaction_with_current_medicine_by_previous_code(check) -> None:
    report = check(rx(item(WARFARIN_5), extra=(statement(PARACETAMOL_500_OLD),)))
    assert rules(report) == ["interaction"]  # warfarin with paracetamol, moderate


def test_interaction_with_current_medicine_by_exact_name(check) -> None:
    for name in ("Simvastatin 40mg tablets", "  SIMVASTATIN 40MG TABLETS ", "simvastatin"):
        report = check(rx(item(CLARITHROMYCIN_500, frequency=2, qty=14),
                          extra=(statement(text=name),)))
        assert rules(report) == ["interaction"], name


def test_name_must_match_exactly(check) -> None:
    for name in ("Simvastatin 40mg", "simvastatin 40", "simva"):
        report = check(rx(item(CLARITHROMYCIN_500, frequency=2, qty=14),
                          extra=(statement(text=name),)))
        assert rules(report) == [], name


def test_interaction_with_current_medicine_by_atc_coding(check) -> None:
    report = check(rx(item(WARFARIN_5), extra=(statement(text="Some NSAID", atc="M01AB05"),)))
    assert rules(report) == ["interaction"]


@pytest.mark.parametrize("status,counts", [
    ("active", True), ("completed", True), ("intended", True), ("on-hold", True),
    ("unknown", True), ("not-taken", True), ("stopped", False), ("entered-in-error", False),
])
def test_medication_statement_statuses(check, status: str, counts: bool) -> None:
    report = check(rx(item(WARFARIN_5), extra=(statement(ASPIRIN_75, status=status),)))
    assert rules(report) == (["interaction"] if counts else [])


def test_statement_with_medication_reference(check) -> None:
    st = statement()
    del st["medicationCodeableConcept"]
    st["medicationReference"] = {"reference": "Medication/m1"}
    med = {"resourceType": "Medication", "id": "m1",
           "code": {"coding": [{"system": "http://snomed.info/sct", "code": ASPIRIN_75}]}}
    assert rules(check(rx(item(WARFARIN_5), extra=(st, med)))) == ["interaction"]


def test_current_medicines_do_not_interact_with_each_other(check) -> None:
    report = check(rx(item(GLICLAZIDE_80),
                      extra=(statement(WARFARIN_5), statement(ASPIRIN_75))))
    assert rules(report) == []


def test_no_interaction_between_unrelated_items(check) -> None:
    assert rules(check(rx(item(GLICLAZIDE_80), item(AMOXICILLIN_500, frequency=3)))) == []


def test_every_matching_rule_and_pair_is_reported(check) -> None:
    # Warfarin + aspirin (major) and warfarin + ibuprofen (M01A), aspirin + ibuprofen
    # (moderate); aspirin/ibuprofen share no class at level 4.
    report = check(rx(item(WARFARIN_5), item(ASPIRIN_75),
                      item(IBUPROFEN_400, frequency=3, qty=84)))
    assert rules(report) == ["interaction"] * 3


def test_interactions_come_from_the_formulary_view(formulary: FormularyView) -> None:
    bundle = rx(item(GLICLAZIDE_80), item(AMOXICILLIN_500, frequency=3))
    assert rules(validate_bundle(bundle, formulary, now=NOW)) == []
    added = dataclasses.replace(formulary, interactions=[
        *formulary.interactions,
        InteractionEntry("A10BB", "amoxicillin", "minor", "made up for the test")])
    report = validate_bundle(bundle, added, now=NOW)
    [finding] = report.findings
    assert finding.rule == "interaction" and "made up for the test" in finding.diagnostics
    emptied = dataclasses.replace(formulary, interactions=[])
    assert rules(validate_bundle(rx(item(WARFARIN_5), item(ASPIRIN_75)), emptied,
                                 now=NOW)) == []


def test_interaction_terms_ignore_case_and_space(formulary: FormularyView) -> None:
    view = dataclasses.replace(formulary, interactions=[
        InteractionEntry(" Gliclazide ", "j01c", "minor", "test")])
    bundle = rx(item(GLICLAZIDE_80), item(AMOXICILLIN_500, frequency=3))
    assert rules(validate_bundle(bundle, view, now=NOW)) == ["interaction"]


def test_blank_interaction_terms_match_nothing(formulary: FormularyView) -> None:
    view = dataclasses.replace(formulary, interactions=[InteractionEntry("", " ", "x", "y")])
    assert rules(validate_bundle(rx(item(), item(AMOXICILLIN_500, frequency=3)), view,
                                 now=NOW)) == []


def test_combination_products_interact_by_each_ingredient(check) -> None:
    # Co-codamol holds paracetamol: "warfarin,paracetamol".
    report = check(rx(item(WARFARIN_5), item(CO_CODAMOL_30_500, dose=2, frequency=4, qty=100)))
    assert rules(report) == ["interaction"]


def test_unknown_medicine_takes_no_part(check) -> None:
    assert rules(check(rx(item(WARFARIN_5), item("428673006")))) == ["medication-unknown"]


# -- allergy -----------------------------------------------------------------------------

def test_allergy_by_atc_class(check) -> None:
    report = check(rx(item(AMOXICILLIN_500, frequency=3, qty=21),
                      extra=(allergy("penicillins", "J01C"),)))
    [finding] = report.findings
    assert finding.rule == "allergy" and finding.severity is Severity.WARNING
    assert "Amoxicillin 500mg capsules" in finding.diagnostics
    assert "penicillins" in finding.diagnostics and "J01C" in finding.diagnostics
    assert finding.item_line_id == "mr-1"


def test_allergy_by_ingredient_name_in_text(check) -> None:
    report = check(rx(item(AMOXICILLIN_500, frequency=3, qty=21),
                      extra=(allergy(" Amoxicillin "),)))
    assert rules(report) == ["allergy"]


def test_allergy_by_ingredient_name_in_display(check) -> None:
    resource = allergy()
    resource["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "372687004",
                                    "display": "Amoxicillin"}]}
    assert rules(check(rx(item(AMOXICILLIN_500, frequency=3, qty=21),
                          extra=(resource,)))) == ["allergy"]


def test_allergy_name_must_be_exact(check) -> None:
    for text in ("amoxicillin allergy", "amoxicilin", "penicillin"):
        report = check(rx(item(AMOXICILLIN_500, frequency=3, qty=21), extra=(allergy(text),)))
        assert rules(report) == [], text


@pytest.mark.parametrize("atc,hit", [("J", True), ("J01", True), ("J01C", True),
                                     ("J01CA", True), ("J01CA04", True), ("j01ca04", True),
                                     ("J01CE", False), ("J01CA05", False), ("J01D", False)])
def test_allergy_atc_prefix(check, atc: str, hit: bool) -> None:
    report = check(rx(item(AMOXICILLIN_500, frequency=3, qty=21), extra=(allergy(atc=atc),)))
    assert rules(report) == (["allergy"] if hit else [])


def test_penicillin_allergy_does_not_match_cefalexin(check) -> None:
    report = check(rx(item(CEFALEXIN_500, frequency=3, qty=15),
                      extra=(allergy("penicillins", "J01C"),)))
    assert rules(report) == []


def test_allergy_each_item_checked(check) -> None:
    report = check(rx(item(GLICLAZIDE_80), item(AMOXICILLIN_500, frequency=3, qty=21),
                      extra=(allergy("penicillins", "J01C"),)))
    [finding] = report.findings
    assert finding.item_line_id == "mr-2"


def test_allergy_to_combination_ingredient(check) -> None:
    report = check(rx(item(CO_CODAMOL_30_500, dose=2, frequency=4, qty=100),
                      extra=(allergy("codeine"),)))
    assert rules(report) == ["allergy"]


@pytest.mark.parametrize("clinical,verification,counts", [
    ("active", "confirmed", True), (None, "unconfirmed", True), ("active", None, True),
    ("inactive", None, False), ("resolved", None, False),
    (None, "refuted", False), (None, "entered-in-error", False),
])
def test_allergy_status(check, clinical, verification, counts) -> None:
    resource = allergy("amoxicillin", clinical=clinical, verification=verification)
    report = check(rx(item(AMOXICILLIN_500, frequency=3, qty=21), extra=(resource,)))
    assert rules(report) == (["allergy"] if counts else [])


def test_allergy_without_code_matches_nothing(check) -> None:
    resource = allergy()
    del resource["code"]
    assert rules(check(rx(item(AMOXICILLIN_500, frequency=3, qty=21),
                          extra=(resource,)))) == []


# -- duplicate-therapy -------------------------------------------------------------------

def test_duplicate_by_atc_level_4(check) -> None:
    report = check(rx(item(RAMIPRIL_5), item(LISINOPRIL_10)))
    [finding] = report.findings
    assert finding.rule == "duplicate-therapy" and finding.severity is Severity.WARNING
    assert "C09AA" in finding.diagnostics


def test_same_atc_level_3_is_not_duplicate(check) -> None:
    # Ramipril C09AA05 and losartan C09CA01 share C09 only; the table has C09A with C09C.
    assert rules(check(rx(item(RAMIPRIL_5), item(LOSARTAN_50)))) == ["interaction"]


def test_duplicate_by_shared_ingredient(check) -> None:
    report = check(rx(item(PARACETAMOL_500, dose=2, frequency=2, qty=100),
                      item(CO_CODAMOL_30_500, dose=2, frequency=2, qty=100)))
    [finding] = report.findings
    assert finding.rule == "duplicate-therapy" and "paracetamol" in finding.diagnostics


def test_duplicate_with_current_medicine(check) -> None:
    report = check(rx(item(RAMIPRIL_5), extra=(statement(LISINOPRIL_10),)))
    assert rules(report) == ["duplicate-therapy"]
    report = check(rx(item(RAMIPRIL_5), extra=(statement(text="lisinopril"),)))
    assert rules(report) == []  # a bare name has no ATC class, and is another ingredient
    report = check(rx(item(RAMIPRIL_5), extra=(statement(text="Ramipril"),)))
    assert rules(report) == ["duplicate-therapy"]


def test_same_medicine_twice_is_duplicate(check) -> None:
    assert rules(check(rx(item(GLICLAZIDE_80), item(GLICLAZIDE_80)))) == ["duplicate-therapy"]


def test_stopped_statement_is_not_duplicate(check) -> None:
    report = check(rx(item(RAMIPRIL_5), extra=(statement(LISINOPRIL_10, status="stopped"),)))
    assert rules(report) == []


def test_duplicate_and_interaction_together(check) -> None:
    # Sertraline twice: same ingredient; the table has no sertraline/sertraline pair.
    report = check(rx(item(SERTRALINE_50), item(SERTRALINE_50), item(PHENELZINE_15)))
    assert sorted(rules(report)) == ["duplicate-therapy", "interaction", "interaction"]
