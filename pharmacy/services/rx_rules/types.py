"""Plain data passed into and out of the prescription validation engine (no ORM, no Flask).

The engine (``engine.validate_bundle``) reads a FHIR R4 Bundle and a ``FormularyView`` and
returns a ``ValidationReport``: every finding (rule code, severity, plain-words diagnostics,
FHIRPath expression) and a ``ParsedPrescription`` summary that intake stores.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

RULE_SYSTEM = "urn:dispensary:rx-rule"


class Severity(enum.StrEnum):
    FATAL = "fatal"
    ERROR = "error"
    WARNING = "warning"
    INFORMATION = "information"


@dataclass(frozen=True)
class FormularyEntry:
    code: str                      # current dm+d VPID
    name: str
    ingredient: str                # lower-case, "+"-joined for combinations
    strength: str | None           # as written in the formulary ("500mg", "250mg/5ml")
    form: str
    atc: str | None
    cd_schedule: int | None        # UK schedule 1-5, None = not controlled
    max_daily_dose_mg: Decimal | None
    medicine_id: int | None = None  # the database id, when loaded from the database


@dataclass(frozen=True)
class InteractionEntry:
    a: str                         # ingredient name or ATC prefix
    b: str
    severity: str                  # contraindicated / major / moderate / minor
    effect: str


@dataclass(frozen=True)
class FormularyView:
    """What the rules need of the formulary: entries by current code, old codes, interactions."""

    entries: Mapping[str, FormularyEntry]
    previous_codes: Mapping[str, str]            # historic VPID -> current VPID
    interactions: Sequence[InteractionEntry]

    def lookup(self, code: str) -> FormularyEntry | None:
        """The entry for a current or historic code."""
        entry = self.entries.get(code)
        if entry is None and code in self.previous_codes:
            entry = self.entries.get(self.previous_codes[code])
        return entry


@dataclass(frozen=True)
class Finding:
    rule: str                      # e.g. "cd-quantity-words-missing"
    severity: Severity
    diagnostics: str               # plain words: what is wrong and where
    expression: str | None = None  # FHIRPath, e.g. "Bundle.entry[2].resource.dispenseRequest"
    item_line_id: str | None = None  # the MedicationRequest this is about, if any


@dataclass(frozen=True)
class ParsedItem:
    line_id: str                   # MedicationRequest.id, else its identifier, else "item-N"
    medication_code: str | None
    medication_display: str | None
    formulary_code: str | None     # current VPID when the code is in the formulary
    quantity: Decimal | None
    quantity_unit: str | None
    dosage_text: str | None
    daily_dose_mg: Decimal | None  # computed where the dose is structured
    supply_duration_days: int | None
    repeats_allowed: int
    cd_schedule: int | None
    authored_on: datetime | date | None
    validity_start: date | None
    validity_end: date | None
    status: str | None
    intent: str | None


@dataclass(frozen=True)
class ParsedPrescriber:
    given_name: str | None
    family_name: str | None
    # (system, value) of each professional identifier found on the Practitioner.
    identifiers: tuple[tuple[str, str], ...]
    organisation_ods_code: str | None = None
    organisation_name: str | None = None


@dataclass(frozen=True)
class ParsedPatient:
    nhs_number: str | None
    other_identifiers: tuple[tuple[str, str], ...]
    given_name: str | None
    family_name: str | None
    birth_date: date | None
    allergies: tuple[str, ...]             # substance texts/displays and ATC codes as given
    current_medication_codes: tuple[str, ...]


@dataclass(frozen=True)
class ParsedPrescription:
    prescription_id: str | None            # groupIdentifier value as sent
    patient: ParsedPatient | None
    prescriber: ParsedPrescriber | None
    items: tuple[ParsedItem, ...]
    course_of_therapy: str | None  # "acute" / "continuous" / "continuous-repeat-dispensing"


@dataclass(frozen=True)
class ValidationReport:
    findings: tuple[Finding, ...]
    parsed: ParsedPrescription | None      # None when the bundle could not be read at all
    evaluated_on: date
    extra: dict[str, Any] = field(default_factory=dict)
    # True when the body was not JSON at all: the $validate endpoint answers 400, not 200.
    not_json: bool = False

    @property
    def is_valid(self) -> bool:
        return not any(f.severity in (Severity.ERROR, Severity.FATAL) for f in self.findings)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    def to_operation_outcome(self) -> dict[str, Any]:
        """The FHIR R4 OperationOutcome of the spec: one issue per finding, or one 'valid'."""
        if not self.findings:
            return {"resourceType": "OperationOutcome", "issue": [{
                "severity": "information", "code": "informational",
                "details": {"coding": [{"system": RULE_SYSTEM, "code": "valid"}],
                            "text": "No problems found."},
                "diagnostics": "The prescription passed every automatic check.",
            }]}
        issues = []
        for f in self.findings:
            issue: dict[str, Any] = {
                "severity": f.severity.value,
                "code": _ISSUE_TYPE.get(f.rule, "business-rule" if f.severity
                                        is Severity.WARNING else "invalid"),
                "details": {"coding": [{"system": RULE_SYSTEM, "code": f.rule}]},
                "diagnostics": f.diagnostics,
            }
            if f.expression:
                issue["expression"] = [f.expression]
            issues.append(issue)
        return {"resourceType": "OperationOutcome", "issue": issues}


# FHIR issue-type codes (http://hl7.org/fhir/issue-type) for the rule codes.
_ISSUE_TYPE = {
    "bundle-invalid": "structure",
    "no-items": "required",
    "reference-unresolved": "not-found",
    "dosage-missing": "required",
    "quantity-missing": "required",
    "prescriber-identifier-missing": "required",
    "cd-quantity-words-missing": "required",
    "medication-unknown": "code-invalid",
    "medication-code-invalid": "code-invalid",
    "expired": "business-rule",
    "cd-expired": "business-rule",
}
