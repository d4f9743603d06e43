"""The spec's example bundles give exactly their documented rule codes."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pharmacy.services.rx_rules import RULE_SYSTEM, Severity

from .builders import rules

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "rx"
WRITTEN = date(2026, 11, 20)

EXPECTED = {
    "valid-multi-item-with-allergy.json": [],
    "valid-cd2-quantity-words.json": [],
    "valid-repeat-nurse-prescriber.json": [],
    "invalid-nhs-number.json": ["patient-identifier-invalid"],
    "invalid-prescription-id.json": ["prescription-id-invalid"],
    "invalid-prescriber-gphc-number.json": ["prescriber-identifier-invalid"],
    "invalid-medication-code.json": ["medication-code-invalid"],
    "invalid-cd3-no-quantity-words.json": ["cd-quantity-words-missing"],
}


def shift_dates(text: str, today: date, written: date = WRITTEN) -> str:
    """The spec's recipe: move every date so that ``written`` becomes ``today``."""
    delta = today - written
    return re.sub(r'"(\d{4}-\d{2}-\d{2})',
                  lambda m: '"' + (date.fromisoformat(m[1]) + delta).isoformat(), text)


def test_every_example_file_has_an_expectation() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_gives_its_codes_today(check, name: str) -> None:
    now = datetime.now(UTC)
    today = now.astimezone(ZoneInfo("Europe/London")).date()
    text = shift_dates((EXAMPLES / name).read_text(encoding="utf-8"), today)
    report = check(text.encode(), now=now)
    assert rules(report) == EXPECTED[name]
    outcome = report.to_operation_outcome()
    assert outcome["resourceType"] == "OperationOutcome"
    if EXPECTED[name]:
        assert not report.is_valid
        [issue] = outcome["issue"]
        assert issue["severity"] == "error"
        assert issue["details"]["coding"][0] == {"system": RULE_SYSTEM,
                                                 "code": EXPECTED[name][0]}
        assert issue["diagnostics"] and issue["expression"]
    else:
        assert report.is_valid
        assert outcome["issue"] == [{
            "severity": "information", "code": "informational",
            "details": {"coding": [{"system": RULE_SYSTEM, "code": "valid"}],
                        "text": "No problems found."},
            "diagnostics": "The prescription passed every automatic check."}]


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("days_later", [0, 27, 28])
def test_example_unshifted_at_its_written_date(check, name: str, days_later: int) -> None:
    # The CD examples are valid for 28 days from 2026-11-20, the others for six months.
    now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC) + timedelta(days=days_later)
    report = check((EXAMPLES / name).read_text(encoding="utf-8"), now=now)
    assert rules(report) == EXPECTED[name]


def test_cd_example_expires_on_day_29(check) -> None:
    now = datetime(2026, 12, 19, 9, 0, tzinfo=UTC)
    report = check((EXAMPLES / "valid-cd2-quantity-words.json").read_bytes(), now=now)
    # Past the 28 days, and past the validity period's end (2026-12-18) too.
    assert sorted(rules(report)) == ["cd-expired", "expired"]
    assert all(f.severity is Severity.ERROR for f in report.findings)


def test_examples_are_parsed_for_intake(check) -> None:
    text = (EXAMPLES / "valid-multi-item-with-allergy.json").read_text(encoding="utf-8")
    report = check(text, now=datetime(2026, 11, 20, 12, tzinfo=UTC))
    parsed = report.parsed
    assert parsed is not None
    assert parsed.prescription_id == "FF5436-B86016-BB360M"
    assert parsed.course_of_therapy == "continuous"
    assert parsed.patient is not None and parsed.patient.nhs_number == "9999531342"
    assert "penicillins" in parsed.patient.allergies and "J01C" in parsed.patient.allergies
    assert parsed.prescriber is not None
    assert parsed.prescriber.identifiers == (("https://fhir.hl7.org.uk/Id/gmc-number",
                                              "9214108"),)
    assert parsed.prescriber.organisation_ods_code == "B86016"
    gliclazide, lansoprazole = parsed.items
    assert gliclazide.formulary_code == "42082911000001100"
    assert gliclazide.daily_dose_mg == 160
    assert gliclazide.quantity == 56 and gliclazide.quantity_unit == "tablet"
    assert gliclazide.supply_duration_days == 28
    assert gliclazide.validity_start == date(2026, 11, 20)
    assert gliclazide.validity_end == date(2027, 5, 19)
    assert gliclazide.authored_on == date(2026, 11, 20)
    assert lansoprazole.line_id == "fa65424f-d889-5033-a694-c64dbc82072a"
    assert lansoprazole.daily_dose_mg == 30
