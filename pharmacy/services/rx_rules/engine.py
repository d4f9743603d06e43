"""The prescription validation engine: a FHIR R4 Bundle in, every finding out.

``validate_bundle`` is pure (no database, no Flask, no clock of its own) and never raises.
Rules and their severities are those of ``shared/spec/prescription-validation.md``; the
reference data (formulary entries, historic codes, interactions, maximum doses, controlled-drug
schedules) comes only from the ``FormularyView``.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from . import identifiers as ids
from .bundle import BundleIndex, Entry, NotFhir, NotJson, decode_json, plain_json, validate_fhir
from .clinical import (
    Medicine,
    check_allergies,
    check_pairs,
    medicine_of_entry,
    statement_medicines,
)
from .dose import (
    DailyDose,
    Strength,
    daily_dose,
    parse_strength,
    supply_days,
    to_decimal,
    whole_days,
)
from .fhir import (
    ATC_SYSTEM,
    as_list,
    codings,
    concept_names,
    controlled_drug_extension,
    duration_days,
    get,
    identifiers_of,
    text,
    to_int,
)
from .types import (
    Finding,
    FormularyEntry,
    FormularyView,
    ParsedItem,
    ParsedPatient,
    ParsedPrescriber,
    ParsedPrescription,
    Severity,
    ValidationReport,
)
from .validity import (
    FhirDate,
    cd_last_day,
    evaluation_date,
    is_in_future,
    parse_fhir_date,
    six_month_last_day,
)
from .words import words_to_number

logger = logging.getLogger(__name__)

ERROR = Severity.ERROR
WARNING = Severity.WARNING

DISPENSABLE_INTENTS = ("order", "original-order", "instance-order")
CD_28_DAY_SCHEDULES = (2, 3, 4)
CD_FORM_SCHEDULES = (2, 3)  # words and figures, no repeats (MDR 2001 reg 15)
CD_SUPPLY_LIMIT_DAYS = 30
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"


def validate_bundle(
    raw: bytes | str | Mapping[str, Any], formulary: FormularyView, *, now: datetime
) -> ValidationReport:
    """Check a prescription bundle against every rule of the spec.

    Args:
        raw: the request body (bytes or text of JSON), or JSON already parsed.
        formulary: medicines, historic codes and interactions the rules read.
        now: the current time, timezone-aware; the evaluation date is its date in
            Europe/London.

    Returns:
        Every finding (an empty tuple when there is none), and the prescription as read
        (``parsed`` is None when the bundle is not JSON or not a FHIR R4 Bundle).
    """
    today = evaluation_date(now)
    try:
        return _validate(raw, formulary, now, today)
    except Exception:  # the engine answers for any input; a bug must not become a 500
        logger.exception("prescription validation failed unexpectedly")
        finding = Finding("bundle-invalid", ERROR,
                          "The bundle could not be checked because of an internal error; "
                          "it has not been accepted.", "Bundle")
        return ValidationReport((finding,), None, today, {"internal_error": True})


def _validate(raw: Any, formulary: FormularyView, now: datetime, today: date
              ) -> ValidationReport:
    try:
        # Text is decoded; anything else is JSON the caller parsed already (a dict, or a
        # list or number that is JSON but not a Bundle).
        data = (decode_json(raw) if isinstance(raw, bytes | bytearray | memoryview | str)
                else plain_json(raw))
    except NotJson as exc:
        finding = Finding("bundle-invalid", ERROR, f"{exc} A FHIR R4 Bundle in JSON is needed.")
        return ValidationReport((finding,), None, today, not_json=True)
    except NotFhir as exc:
        return ValidationReport((Finding("bundle-invalid", ERROR, str(exc), exc.expression),),
                                None, today)
    try:
        bundle = validate_fhir(plain_json(data))
    except NotFhir as exc:
        return ValidationReport((Finding("bundle-invalid", ERROR, str(exc), exc.expression),),
                                None, today)
    check = _Check(BundleIndex.of(bundle), formulary, now, today)
    check.run()
    return ValidationReport(tuple(check.findings), check.parsed(), today)


@dataclass
class _Item:
    """One MedicationRequest as the rules see it."""

    number: int
    entry: Entry
    line_id: str
    codes: list[tuple[int, str]] = field(default_factory=list)  # (coding index, SNOMED code)
    code_path: str = ""
    display: str | None = None
    formulary: FormularyEntry | None = None
    matched_code: str | None = None
    schedule: int | None = None
    strength: Strength | None = None
    daily: DailyDose | None = None
    supply_days: Decimal | None = None
    authored: FhirDate | None = None
    validity_start: FhirDate | None = None
    validity_end: FhirDate | None = None

    @property
    def mr(self) -> Mapping[str, Any]:
        return self.entry.resource

    @property
    def label(self) -> str:
        name = (self.formulary.name if self.formulary else None) or self.display or (
            self.codes[0][1] if self.codes else None)
        return f"Item {self.number} ({name})" if name else f"Item {self.number}"

    def path(self, element: str = "") -> str:
        return self.entry.path + (f".{element}" if element else "")


class _Check:
    def __init__(self, index: BundleIndex, formulary: FormularyView, now: datetime,
                 today: date) -> None:
        self.index = index
        self.formulary = formulary
        self.now = now
        self.today = today
        self.findings: list[Finding] = []
        self.items: list[_Item] = []
        self.patient: Entry | None = None
        self.practitioner: Entry | None = None
        self.role: Entry | None = None
        # Each distinct prescribing Practitioner, with the first item naming it.
        self._prescribers: dict[int, tuple[Entry, _Item]] = {}
        self._current: list[Medicine] = []

    def add(self, rule: str, severity: Severity, diagnostics: str,
            expression: str | None = None, item: _Item | None = None) -> None:
        self.findings.append(Finding(rule, severity, diagnostics, expression,
                                     item.line_id if item else None))

    # -- orchestration -------------------------------------------------------------------

    def run(self) -> None:
        requests = list(self.index.of_type("MedicationRequest"))
        if not requests:
            self.add("no-items", ERROR, "The bundle holds no MedicationRequest: there is "
                     "nothing to dispense.", "Bundle.entry")
        seen_ids: set[str] = set()
        for number, entry in enumerate(requests, start=1):
            line_id = _line_id(entry.resource, number)
            if line_id in seen_ids:
                line_id = f"{line_id}-{number}"
            seen_ids.add(line_id)
            self.items.append(_Item(number, entry, line_id))

        for item in self.items:
            self.check_medication(item)  # first, so that every finding names the medicine
            self.check_references(item)
        self.check_patients()
        self.check_prescription_ids()
        self.check_prescribers()
        for item in self.items:
            self.check_status(item)
            self.check_dosage_and_quantity(item)
            self.read_schedule_and_dose(item)
            self.check_dates(item)
            self.check_controlled_drug(item)
            self.check_dose(item)
        self.check_clinical()

    # -- references ----------------------------------------------------------------------

    def check_references(self, item: _Item) -> None:
        subject = self.index.resolve(get(item.mr, "subject"))
        if subject is None or subject.resource_type != "Patient":
            self.add("reference-unresolved", ERROR,
                     f"{item.label}: the subject {_reference_text(get(item.mr, 'subject'))} "
                     + _not_found(subject, "a Patient"),
                     item.path("subject"), item)
        elif self.patient is None:
            self.patient = subject

        requester = self.index.resolve(get(item.mr, "requester"))
        if requester is not None and requester.resource_type == "PractitionerRole":
            practitioner = self.index.resolve(get(requester.resource, "practitioner"))
            if practitioner is None or practitioner.resource_type != "Practitioner":
                self.add("reference-unresolved", ERROR,
                         f"{item.label}: the requester's PractitionerRole names no "
                         f"Practitioner in the bundle (practitioner "
                         f"{_reference_text(get(requester.resource, 'practitioner'))} "
                         + _not_found(practitioner, "a Practitioner"),
                         requester.path + ".practitioner", item)
                return
            self.role = self.role or requester
            requester = practitioner
        elif requester is None or requester.resource_type != "Practitioner":
            self.add("reference-unresolved", ERROR,
                     f"{item.label}: the requester "
                     f"{_reference_text(get(item.mr, 'requester'))} "
                     + _not_found(requester, "a Practitioner or PractitionerRole"),
                     item.path("requester"), item)
            return
        if self.practitioner is None:
            self.practitioner = requester
        self._prescribers.setdefault(requester.index, (requester, item))

    # -- identifiers ---------------------------------------------------------------------

    def check_patients(self) -> None:
        for patient in self.index.of_type("Patient"):
            for i, system, value in identifiers_of(patient.resource):
                if system != ids.NHS_NUMBER_SYSTEM:
                    continue
                if value is None or not ids.is_valid_nhs_number(value):
                    self.add("patient-identifier-invalid", ERROR,
                             "The patient's NHS number " + (
                                 "has no value." if value is None else
                                 "is not valid: it must be 10 digits passing the modulus 11 "
                                 "check."),
                             f"{patient.path}.identifier[{i}]")

    def check_prescription_ids(self) -> None:
        reported: set[str] = set()
        for item in self.items:
            group = get(item.mr, "groupIdentifier")
            if get(group, "system") != ids.PRESCRIPTION_ID_SYSTEM:
                continue
            value = get(group, "value")
            value = value if isinstance(value, str) else ""
            if ids.is_valid_prescription_id(value) or value in reported:
                continue
            reported.add(value)
            self.add("prescription-id-invalid", ERROR,
                     f"{item.label}: the prescription id '{value}' is not a valid EPS "
                     "prescription id (17 characters 0-9/A-Z and an ISO 7064 MOD 37-2 check "
                     "character; hyphens are ignored).",
                     item.path("groupIdentifier.value"), item)

    def check_prescribers(self) -> None:
        for practitioner, item in self._prescribers.values():
            professional = [(i, s, v) for i, s, v in identifiers_of(practitioner.resource)
                            if s in ids.PROFESSIONAL_IDENTIFIERS]
            who = _prescriber_text(practitioner.resource, item)
            if not professional:
                self.add("prescriber-identifier-missing", ERROR,
                         f"{who} has no professional identifier (GMC, GPhC or NMC number, "
                         "US NPI or DEA number).", f"{practitioner.path}.identifier")
            for i, system, value in professional:
                kind = ids.PROFESSIONAL_IDENTIFIERS[system or ""]
                if value is not None and kind.is_valid(value):
                    continue
                shown = f"'{value}'" if value is not None else "with no value"
                self.add("prescriber-identifier-invalid", ERROR,
                         f"{who}: the {kind.label} {shown} is not valid; expected "
                         f"{kind.expected}.", f"{practitioner.path}.identifier[{i}]")

    # -- per item ------------------------------------------------------------------------

    def check_status(self, item: _Item) -> None:
        status = get(item.mr, "status")
        if status != "active":
            self.add("status-not-active", ERROR,
                     f"{item.label} has status {_quoted(status)}; only an active request can "
                     "be dispensed.", item.path("status"), item)
        intent = get(item.mr, "intent")
        if intent not in DISPENSABLE_INTENTS:
            self.add("intent-not-order", ERROR,
                     f"{item.label} has intent {_quoted(intent)}; only 'order', "
                     "'original-order' or 'instance-order' can be dispensed.",
                     item.path("intent"), item)

    def check_medication(self, item: _Item) -> None:
        concept = get(item.mr, "medicationCodeableConcept")
        item.code_path = item.path("medicationCodeableConcept")
        if concept is None:
            medication = self.index.resolve(get(item.mr, "medicationReference"))
            if medication is not None and medication.resource_type == "Medication":
                concept = get(medication.resource, "code")
                item.code_path = medication.path + ".code"
        names = concept_names(concept)
        item.display = names[0] if names else None
        item.codes = [(i, code) for i, c in codings(concept)
                      if c.get("system") == ids.SNOMED_SYSTEM
                      and isinstance(code := c.get("code"), str)]
        if not item.codes:
            self.add("medication-code-invalid", ERROR,
                     f"{item.label} has no SNOMED CT (dm+d) medication code.",
                     item.code_path, item)
            return
        valid_unknown: list[str] = []
        for i, code in item.codes:
            if not ids.is_valid_medication_code(code):
                self.add("medication-code-invalid", ERROR,
                         f"{item.label}: the SNOMED CT code '{code}' is not a valid concept "
                         "id (Verhoeff check digit, partition 00 or 10).",
                         f"{item.code_path}.coding[{i}].code", item)
                continue
            found = self.formulary.lookup(code)
            if found is None:
                valid_unknown.append(code)
            elif item.formulary is None:
                item.formulary, item.matched_code = found, code
                display = text(get(concept, "coding", i, "display"))
                item.display = display or item.display
        if item.formulary is None and valid_unknown:
            self.add("medication-unknown", ERROR,
                     f"{item.label}: the medicine code '{valid_unknown[0]}' is not in the "
                     "formulary (neither a current nor a previous dm+d code).",
                     item.code_path, item)

    def check_dosage_and_quantity(self, item: _Item) -> None:
        dosages = as_list(get(item.mr, "dosageInstruction"))
        if not any(_has_dosage(d) for d in dosages):
            self.add("dosage-missing", ERROR,
                     f"{item.label} has no dosage instruction (neither text nor a "
                     "structured dose).", item.path("dosageInstruction"), item)
        quantity = get(item.mr, "dispenseRequest", "quantity")
        value = get(quantity, "value")
        number = to_decimal(value)
        if number is None or number <= 0:
            self.add("quantity-missing", ERROR,
                     f"{item.label} has no quantity to dispense (dispenseRequest.quantity"
                     + (" must be more than zero)." if number is not None else ")."),
                     item.path("dispenseRequest.quantity"), item)

    def read_schedule_and_dose(self, item: _Item) -> None:
        """The item's CD schedule, daily dose and days of supply, for the rules after."""
        # Schedule: the formulary's, or the extension's where the formulary has none.
        ext_schedule, _, _ = controlled_drug_extension(item.mr)
        item.schedule = (item.formulary.cd_schedule if item.formulary else None) or ext_schedule
        quantity = get(item.mr, "dispenseRequest", "quantity")
        if item.formulary is not None:
            item.strength = parse_strength(item.formulary.strength)
            item.daily = daily_dose(as_list(get(item.mr, "dosageInstruction")), item.strength)
            if item.daily is not None and isinstance(quantity, Mapping):
                item.supply_days = supply_days(quantity, item.daily, item.strength)
        if item.supply_days is None:
            item.supply_days = duration_days(
                get(item.mr, "dispenseRequest", "expectedSupplyDuration"))

    def check_dates(self, item: _Item) -> None:
        authored = parse_fhir_date(get(item.mr, "authoredOn"))
        start = parse_fhir_date(get(item.mr, "dispenseRequest", "validityPeriod", "start"))
        end = parse_fhir_date(get(item.mr, "dispenseRequest", "validityPeriod", "end"))
        item.authored, item.validity_start, item.validity_end = authored, start, end
        if authored is not None and is_in_future(authored, self.now):
            self.add("authored-in-future", ERROR,
                     f"{item.label} was authored on {get(item.mr, 'authoredOn')}, which is in "
                     "the future.", item.path("authoredOn"), item)
        if start is not None and _first_day(start) > self.today:
            self.add("not-yet-valid", ERROR,
                     f"{item.label} is not valid until {_first_day(start).isoformat()}.",
                     item.path("dispenseRequest.validityPeriod.start"), item)

        # The appropriate date: the later of authoredOn and validityPeriod.start. A date
        # given only as a year or a month counts from its last day: the latest it can mean,
        # so a prescription is never called expired early, and never escapes the check.
        starts = [(_last_day(d), where) for d, where in (
            (authored, "authoredOn"), (start, "dispenseRequest.validityPeriod.start"))
            if d is not None]
        appropriate, appropriate_path = max(starts) if starts else (None, "authoredOn")
        reasons: list[str] = []
        if appropriate is not None and item.schedule in CD_28_DAY_SCHEDULES:
            last = cd_last_day(appropriate)
            if self.today > last:
                self.add("cd-expired", ERROR,
                         f"{item.label} is a Schedule {item.schedule} controlled drug: it "
                         f"could be supplied only up to {last.isoformat()} (28 days after "
                         f"{appropriate.isoformat()}).",
                         item.path(appropriate_path), item)
        elif appropriate is not None:
            last = six_month_last_day(appropriate)
            if self.today > last:
                reasons.append(f"its six-month validity from {appropriate.isoformat()} ended "
                               f"on {last.isoformat()}")
        if end is not None and self.today > _last_day(end):
            reasons.append(f"its validity period ended on {_last_day(end).isoformat()}")
        if reasons:
            where = ("dispenseRequest.validityPeriod.end" if end is not None
                     and self.today > _last_day(end) else appropriate_path)
            self.add("expired", ERROR, f"{item.label} has expired: " + " and ".join(reasons)
                     + ".", item.path(where), item)

    def check_controlled_drug(self, item: _Item) -> None:
        schedule = item.schedule
        if schedule in CD_FORM_SCHEDULES:
            repeats = to_int(get(item.mr, "dispenseRequest", "numberOfRepeatsAllowed")) or 0
            if repeats > 0:
                self.add("cd-repeats-not-allowed", ERROR,
                         f"{item.label} is a Schedule {schedule} controlled drug and cannot be "
                         f"repeated, but allows {repeats} repeat(s).",
                         item.path("dispenseRequest.numberOfRepeatsAllowed"), item)
            _, words, _ = controlled_drug_extension(item.mr)
            if not words:
                self.add("cd-quantity-words-missing", ERROR,
                         f"{item.label} is a Schedule {schedule} controlled drug; its total "
                         "quantity must also be given in words (controlled-drug extension "
                         "quantityWords).", item.path("extension"), item)
            else:
                self.check_words_match_figures(item, words)
        if schedule in CD_28_DAY_SCHEDULES and item.supply_days is not None and (
                item.supply_days > CD_SUPPLY_LIMIT_DAYS):
            self.add("cd-supply-over-30-days", WARNING,
                     f"{item.label} is a Schedule {schedule} controlled drug and the quantity "
                     f"lasts {_days(item.supply_days)} days at the prescribed dose, more than "
                     f"{CD_SUPPLY_LIMIT_DAYS}.", item.path("dispenseRequest.quantity"), item)

    def check_words_match_figures(self, item: _Item, words: str) -> None:
        """Words and figures must give the same total (Misuse of Drugs Regulations 2001
        reg 15). Only a clear disagreement is reported, as a warning for the pharmacist:
        words that do not read as one whole number are left to them."""
        said = words_to_number(words)
        figure = get(item.mr, "dispenseRequest", "quantity", "value")
        if said is None or isinstance(figure, bool) or not isinstance(figure, int | float):
            return
        if float(figure) != float(said):
            self.add("cd-quantity-words-mismatch", WARNING,
                     f"{item.label}: the quantity in words, '{words}', says {said}, but the "
                     f"figures say {figure:g}; a controlled-drug prescription must give the "
                     "same total in both.", item.path("dispenseRequest.quantity"), item)

    def check_dose(self, item: _Item) -> None:
        entry = item.formulary
        if entry is None or item.daily is None or item.daily.mg is None:
            return
        maximum = to_decimal(entry.max_daily_dose_mg)  # tolerate an int or float in the view
        if maximum is not None and item.daily.mg > maximum:
            self.add("dose-above-maximum", WARNING,
                     f"{item.label}: the prescribed daily dose of {_mg(item.daily.mg)} "
                     f"{entry.ingredient} is above the adult maximum of {_mg(maximum)} a day.",
                     item.path("dosageInstruction"), item)

    # -- clinical ------------------------------------------------------------------------

    def check_clinical(self) -> None:
        medicines = [medicine_of_entry(item.formulary, item.label, item.code_path,
                                       item.line_id)
                     for item in self.items if item.formulary is not None]
        current = statement_medicines(self.index, self.formulary)
        for finding in check_pairs(medicines, current, self.formulary.interactions):
            self.findings.append(finding)
        allergies = list(self.index.of_type("AllergyIntolerance"))
        for finding in check_allergies(medicines, allergies):
            self.findings.append(finding)
        self._current = current

    # -- the prescription as read --------------------------------------------------------

    def parsed(self) -> ParsedPrescription:
        first = self.items[0].mr if self.items else {}
        prescription_id = text(get(first, "groupIdentifier", "value"))
        course = None
        for _, coding in codings(get(first, "courseOfTherapyType")):
            course = text(coding.get("code"))
            break
        return ParsedPrescription(
            prescription_id=prescription_id,
            patient=self._parsed_patient(),
            prescriber=self._parsed_prescriber(),
            items=tuple(self._parsed_item(item) for item in self.items),
            course_of_therapy=course,
        )

    def _parsed_item(self, item: _Item) -> ParsedItem:
        quantity = get(item.mr, "dispenseRequest", "quantity")
        dosage_texts = [text(get(d, "text")) for d in as_list(get(item.mr, "dosageInstruction"))]
        authored: datetime | date | None = None
        if item.authored is not None:
            authored = item.authored.instant or item.authored.day
        return ParsedItem(
            line_id=item.line_id,
            medication_code=item.matched_code or (item.codes[0][1] if item.codes else None),
            medication_display=item.display,
            formulary_code=item.formulary.code if item.formulary else None,
            quantity=to_decimal(get(quantity, "value")),
            quantity_unit=text(get(quantity, "unit")) or text(get(quantity, "code")),
            dosage_text="; ".join(t for t in dosage_texts if t) or None,
            daily_dose_mg=item.daily.mg if item.daily else None,
            supply_duration_days=whole_days(item.supply_days),
            repeats_allowed=max(to_int(get(item.mr, "dispenseRequest",
                                           "numberOfRepeatsAllowed")) or 0, 0),
            cd_schedule=item.schedule,
            authored_on=authored,
            validity_start=_first_day(item.validity_start) if item.validity_start else None,
            validity_end=_last_day(item.validity_end) if item.validity_end else None,
            status=text(get(item.mr, "status")),
            intent=text(get(item.mr, "intent")),
        )

    def _parsed_patient(self) -> ParsedPatient | None:
        patient = self.patient
        if patient is None:
            patients = list(self.index.of_type("Patient"))
            if len(patients) != 1:
                return None
            patient = patients[0]
        nhs_number: str | None = None
        others: list[tuple[str, str]] = []
        for _, system, value in identifiers_of(patient.resource):
            if system == ids.NHS_NUMBER_SYSTEM and value and nhs_number is None:
                nhs_number = (ids.compact_nhs_number(value) if ids.is_valid_nhs_number(value)
                              else value.strip())
            elif system and value:
                others.append((system, value))
        given, family = _name(patient.resource)
        birth = parse_fhir_date(get(patient.resource, "birthDate"))
        allergies: list[str] = []
        for allergy in self.index.of_type("AllergyIntolerance"):
            concept = get(allergy.resource, "code")
            allergies.extend(concept_names(concept))
            allergies.extend(text(c.get("code")) or "" for _, c in codings(concept)
                             if c.get("system") == ATC_SYSTEM)
        current = [m.code for m in self._current if m.code]
        return ParsedPatient(
            nhs_number=nhs_number,
            other_identifiers=tuple(others),
            given_name=given,
            family_name=family,
            birth_date=birth.day if birth else None,
            allergies=tuple(a for a in dict.fromkeys(allergies) if a),
            current_medication_codes=tuple(dict.fromkeys(current)),
        )

    def _parsed_prescriber(self) -> ParsedPrescriber | None:
        if self.practitioner is None:
            return None
        given, family = _name(self.practitioner.resource)
        professional = tuple((s, v.strip())
                             for _, s, v in identifiers_of(self.practitioner.resource)
                             if s in ids.PROFESSIONAL_IDENTIFIERS and v)
        ods_code = org_name = None
        if self.role is not None:
            org = self.index.resolve(get(self.role.resource, "organization"))
            if org is not None and org.resource_type == "Organization":
                org_name = text(get(org.resource, "name"))
                for _, system, value in identifiers_of(org.resource):
                    if system == ODS_SYSTEM and value:
                        ods_code = value.strip()
                        break
        return ParsedPrescriber(given, family, professional, ods_code, org_name)




def _line_id(mr: Mapping[str, Any], number: int) -> str:
    """MedicationRequest.id, else its first identifier's value, else "item-N"."""
    rid = text(get(mr, "id"))
    if rid:
        return rid
    for _, _, value in identifiers_of(mr):
        if value and value.strip():
            return value.strip()
    return f"item-{number}"


def _reference_text(reference: Any) -> str:
    ref = get(reference, "reference")
    if isinstance(ref, str) and ref:
        return _quoted(ref)
    return "(no reference)" if reference is None or isinstance(reference, Mapping) else "?"


def _not_found(found: Entry | None, wanted: str) -> str:
    if found is None:
        return "does not resolve to a resource in the bundle."
    return f"resolves to a {found.resource_type}, not {wanted}."


def _quoted(value: Any) -> str:
    if value is None:
        return "(none)"
    shown = value if isinstance(value, str) else repr(value)
    return f"'{shown[:80]}'"


def _has_dosage(dosage: Any) -> bool:
    if text(get(dosage, "text")) or text(get(dosage, "patientInstruction")):
        return True
    return any(isinstance(d, Mapping) and (get(d, "doseQuantity") or get(d, "doseRange"))
               for d in as_list(get(dosage, "doseAndRate")))


def _first_day(value: FhirDate) -> date:
    """The first calendar day (Europe/London) a FHIR date or dateTime covers."""
    if value.london_date is not None:
        return value.london_date
    return date(value.year, value.month or 1, 1)


def _last_day(value: FhirDate) -> date:
    """The last calendar day (Europe/London) a FHIR date or dateTime covers."""
    if value.london_date is not None:
        return value.london_date
    if value.month is None:
        return date(value.year, 12, 31)
    return date(value.year, value.month, calendar.monthrange(value.year, value.month)[1])


def _days(days: Decimal) -> str:
    return f"{days.quantize(Decimal('0.1')).normalize():f}"


def _mg(mg: Decimal) -> str:
    if mg >= 1000 and mg % 1000 == 0:
        return f"{(mg / 1000).normalize():f} g"
    return f"{mg.quantize(Decimal('0.001')).normalize():f} mg"


def _name(resource: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(given, family) of a resource's first name."""
    for name in as_list(get(resource, "name")):
        given = [g.strip() for g in as_list(get(name, "given")) if isinstance(g, str)]
        return (" ".join(given) or None), text(get(name, "family"))
    return None, None


def _prescriber_text(practitioner: Mapping[str, Any], item: _Item) -> str:
    given, family = _name(practitioner)
    name = " ".join(n for n in (given, family) if n)
    return (f"The prescriber {name}" if name else
            f"The prescriber of {item.label[:1].lower()}{item.label[1:]}")
