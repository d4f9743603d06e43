"""Prescriptions: validation, intake, the pharmacist's decisions, repeats and dispensing.

Every state change writes an audit event naming who, what, why and the rule codes that were
overridden. Status changes are checked against the allowed transitions here, so no path
(page, API or job) can, say, dispense a rejected prescription.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Conflict, DomainError, Forbidden, InvalidRequest, NotFound
from ..models import (
    Allergy,
    Notification,
    Order,
    OrderStatus,
    PatientProfile,
    Prescriber,
    PrescriberProfession,
    Prescription,
    PrescriptionItem,
    PrescriptionReview,
    PrescriptionStatus,
    ReviewAction,
    Role,
    User,
)
from ..models.base import utcnow
from . import audit
from .rx_rules.types import RULE_SYSTEM, ParsedPrescription, ValidationReport

logger = logging.getLogger(__name__)

LONDON = ZoneInfo("Europe/London")
S = PrescriptionStatus

# Which statuses each status may move to. Anything else is refused.
TRANSITIONS: dict[PrescriptionStatus, frozenset[PrescriptionStatus]] = {
    S.RECEIVED: frozenset({S.AWAITING_VERIFICATION, S.REJECTED}),
    S.AWAITING_VERIFICATION: frozenset({S.VERIFIED, S.AWAITING_SECOND_CHECK, S.REJECTED,
                                        S.QUERIED, S.CANCELLED, S.EXPIRED}),
    S.AWAITING_SECOND_CHECK: frozenset({S.VERIFIED, S.REJECTED, S.AWAITING_VERIFICATION,
                                        S.CANCELLED, S.EXPIRED}),
    S.QUERIED: frozenset({S.AWAITING_VERIFICATION, S.REJECTED, S.CANCELLED, S.EXPIRED}),
    S.VERIFIED: frozenset({S.DISPENSED, S.CANCELLED, S.EXPIRED}),
    S.DISPENSED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
}
OPEN_STATUSES = (S.AWAITING_VERIFICATION, S.AWAITING_SECOND_CHECK, S.QUERIED)
SECOND_CHECK_SCHEDULES = frozenset({2, 3})
REPEAT_LEAD_DAYS = 7          # an eRD issue may be ordered this many days before it is due


class InvalidTransition(DomainError):
    status, code, title = 409, "invalid_transition", "Conflict"


class FhirInputError(DomainError):
    """The body is not a FHIR JSON document we can read (not JSON, too deep, too large)."""

    status, code, title = 400, "bundle_invalid", "Bad Request"


def _transition(rx: Prescription, new: PrescriptionStatus) -> PrescriptionStatus:
    old = rx.status
    if new not in TRANSITIONS[old]:
        raise InvalidTransition(
            f"A prescription that is {old.value.replace('_', ' ')} cannot become "
            f"{new.value.replace('_', ' ')}.", current_status=old.value)
    rx.status = new
    return old


# --- reading FHIR JSON safely ------------------------------------------------------------

MAX_JSON_DEPTH = 64  # real bundles nest about 12 deep


def _depth_ok(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return True


def parse_fhir_json(raw: bytes) -> Any:
    """Decode a request body as JSON, refusing what is not JSON or absurdly deep."""
    try:
        text = raw.decode("utf-8-sig")
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FhirInputError(f"The body is not JSON: {exc}") from None
    except RecursionError:
        raise FhirInputError(f"The JSON is nested too deeply (over {MAX_JSON_DEPTH}).") from None
    if not _depth_ok(document, MAX_JSON_DEPTH):
        raise FhirInputError(f"The JSON is nested too deeply (over {MAX_JSON_DEPTH}).")
    return document


def operation_outcome_for_error(rule: str, message: str) -> dict[str, Any]:
    """A one-issue OperationOutcome for input that could not be read at all."""
    return {"resourceType": "OperationOutcome", "issue": [{
        "severity": "error", "code": "structure" if rule == "bundle-invalid" else "invalid",
        "details": {"coding": [{"system": RULE_SYSTEM, "code": rule}]},
        "diagnostics": message}]}


# --- validation and intake ------------------------------------------------------------------

def validate(session: Session, document: Any, *, now: datetime | None = None) -> ValidationReport:
    """Run every automatic check on a FHIR Bundle against this pharmacy's formulary."""
    from .rx_rules import load_formulary_view, validate_bundle

    return validate_bundle(document, load_formulary_view(session), now=now or utcnow())


@dataclass(frozen=True)
class Intake:
    prescription: Prescription
    created: bool


def _canonical_hash(document: Any) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _prescription_key(document: Any, parsed: ParsedPrescription | None) -> str:
    """The idempotency key: the prescription id, else the bundle id, else a content hash."""
    if parsed is not None and parsed.prescription_id:
        return parsed.prescription_id.strip().upper()[:64]
    if isinstance(document, dict):
        identifier = document.get("identifier")
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            value = identifier["value"].strip()
            if value:
                return f"bundle:{value}"[:64]
    return f"sha256:{_canonical_hash(document)[:56]}"


def _rules(report: ValidationReport) -> list[str]:
    return sorted({f.rule for f in report.findings})


def receive_prescription(session: Session, document: Any, *, actor: User,
                         now: datetime | None = None,
                         request_id: str | None = None) -> Intake:
    """Store a prescription from a prescribing system, validated, once.

    The bundle is kept verbatim with its OperationOutcome. A valid prescription is queued for
    a pharmacist; one with errors is rejected (the outcome says why) and its patient, when
    known, is told. The same prescription id sent again returns the first record; sent again
    with different content it is a conflict.
    """
    now = now or utcnow()
    report = validate(session, document, now=now)
    key = _prescription_key(document, report.parsed)
    existing = session.scalar(select(Prescription).where(Prescription.prescription_id == key))
    if existing is not None:
        return _same_or_conflict(existing, document)

    parsed = report.parsed
    patient = _link_patient(session, parsed, report) if parsed is not None else None
    if patient is not None:
        # Check against what the pharmacy knows too: the allergies and current medicines on
        # its own record of the patient, which a prescribing system's bundle rarely carries.
        known = with_patient_record(session, document, patient, now=now)
        if known is not document:
            with_record = validate(session, known, now=now)
            # Only ever more findings: the record's additions must not break the bundle.
            if {f.rule for f in report.findings} <= {f.rule for f in with_record.findings} \
                    and "bundle-invalid" not in {f.rule for f in with_record.findings} - {
                        f.rule for f in report.findings}:
                report = with_record
                parsed = report.parsed or parsed
            else:
                logger.warning("the patient record made prescription %s unreadable; "
                               "validated the bundle alone", key)
    prescriber = _link_prescriber(session, parsed, report) if parsed is not None else None
    items = list(parsed.items) if parsed is not None else []
    rx = Prescription(
        prescription_id=key,
        patient_id=patient.id if patient is not None else None,
        prescriber_id=prescriber.id if prescriber is not None else None,
        pharmacy_id=patient.nominated_pharmacy_id if patient is not None else None,
        status=S.RECEIVED,
        prescription_type=_prescription_type(parsed),
        issued_on=_issued_on(parsed),
        received_at=now,
        repeats_allowed=max((i.repeats_allowed for i in items), default=0),
        needs_second_check=any(i.cd_schedule in SECOND_CHECK_SCHEDULES for i in items),
        source_bundle=document if isinstance(document, dict) else {"_raw": document},
        validation_outcome=report.to_operation_outcome(),
    )
    for n, item in enumerate(items, start=1):
        rx.items.append(_item_row(session, item, n))
    try:
        with session.begin_nested():
            session.add(rx)
            session.flush()
    except IntegrityError:
        # Sent twice at once: the other request stored it first.
        existing = session.scalar(select(Prescription).where(Prescription.prescription_id == key))
        if existing is None:
            raise
        return _same_or_conflict(existing, document)

    audit.record(session, action="prescription.received", entity_type="prescription",
                 entity_id=rx.id, actor=actor, request_id=request_id,
                 after={"status": S.RECEIVED.value, "rules": _rules(report)})
    if report.is_valid:
        _transition(rx, S.AWAITING_VERIFICATION)
        audit.record(session, action="prescription.queued", entity_type="prescription",
                     entity_id=rx.id, actor=actor, request_id=request_id,
                     before={"status": S.RECEIVED.value},
                     after={"status": rx.status.value})
        if patient is not None and patient.user_id is not None:
            # Otherwise nobody would know it can be ordered (the item is not named).
            _notify_patient(session, patient, "prescription.received",
                            "Your prescriber has sent us a prescription",
                            "A prescription from your prescriber has arrived. You can order "
                            "it now under My medicines; our pharmacist checks it before it "
                            "is sent.")
    else:
        _transition(rx, S.REJECTED)
        errors = sorted({f.rule for f in report.findings if f.severity.value in ("error",
                                                                                 "fatal")})
        rx.decided_at = now
        rx.decision_reason = "Failed automatic validation: " + ", ".join(errors)
        audit.record(session, action="prescription.rejected", entity_type="prescription",
                     entity_id=rx.id, actor=actor, request_id=request_id,
                     before={"status": S.RECEIVED.value}, after={"status": rx.status.value},
                     reason=rx.decision_reason)
        if patient is not None:
            _notify_patient(session, patient, "prescription.rejected",
                            "Your prescription could not be accepted",
                            "We could not accept a prescription sent for you. We have told the "
                            "prescriber why; they will send a corrected one.")
    session.flush()
    return Intake(rx, True)


#: A patient's other prescriptions count as current medicines for this long after they
#: arrived (a typical repeat is 28 days; three months covers a late or longer supply).
CURRENT_PRESCRIPTION_DAYS = 90
_ATC_CODE = re.compile(r"[A-Z][0-9]{2}(?:[A-Z](?:[A-Z](?:[0-9]{2})?)?)?")


def with_patient_record(session: Session, document: Any, patient: PatientProfile, *,
                        now: datetime) -> Any:
    """The bundle with the pharmacy's record of the patient added for the checks: recorded
    allergies as AllergyIntolerance, recorded current medicines and the items of their
    other live prescriptions as MedicationStatement. The bundle itself is stored verbatim;
    this copy is only validated. Returns ``document`` itself when there is nothing to add.
    """
    from .rx_rules.clinical import ALLERGY_CLASSES
    from .rx_rules.fhir import ATC_SYSTEM

    if not isinstance(document, dict) or not isinstance(document.get("entry"), list):
        return document
    subject = next((e.get("fullUrl") for e in document["entry"] if isinstance(e, dict)
                    and isinstance(e.get("resource"), dict)
                    and e["resource"].get("resourceType") == "Patient"), None)
    if not isinstance(subject, str):
        return document
    reference = {"reference": subject}
    present = {json.dumps(e.get("resource", {}).get("code"), sort_keys=True).lower()
               for e in document["entry"] if isinstance(e, dict)
               and isinstance(e.get("resource"), dict)
               and e["resource"].get("resourceType") == "AllergyIntolerance"}
    added: list[dict[str, Any]] = []
    for allergy in patient.allergies:
        substance = allergy.substance.strip()
        code: dict[str, Any] = ({"coding": [{"system": ATC_SYSTEM, "code": substance}]}
                                if _ATC_CODE.fullmatch(substance) else {"text": substance})
        groups = ALLERGY_CLASSES.get(substance.casefold(), ())
        if groups:
            code["coding"] = [{"system": ATC_SYSTEM, "code": g} for g in groups]
        if json.dumps(code, sort_keys=True).lower() in present:
            continue
        added.append({"resourceType": "AllergyIntolerance", "code": code,
                      "patient": reference,
                      "clinicalStatus": {"coding": [{
                          "system": "http://terminology.hl7.org/CodeSystem/"
                                    "allergyintolerance-clinical", "code": "active"}]}})
    medicines = [(m.medicine.code if m.medicine else None,
                  m.medicine.name if m.medicine else m.description)
                 for m in patient.current_medications]
    since = now - timedelta(days=CURRENT_PRESCRIPTION_DAYS)
    for item in session.scalars(
            select(PrescriptionItem).join(Prescription).where(
                Prescription.patient_id == patient.id,
                Prescription.status.in_([*OPEN_STATUSES, S.VERIFIED, S.DISPENSED]),
                Prescription.received_at >= since)):
        medicines.append((item.medication_code, item.medication_display))
    # The medicine being prescribed again is a continuation, not a second current therapy.
    prescribed = set()
    for entry in document["entry"]:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "MedicationRequest":
            concept = resource.get("medicationCodeableConcept")
            codings = concept.get("coding") if isinstance(concept, dict) else None
            prescribed |= {c.get("code") for c in codings or [] if isinstance(c, dict)}
    for code_value, name in dict.fromkeys(medicines):
        if code_value and code_value in prescribed:
            continue
        medication: dict[str, Any] = {"text": name} if name else {}
        if code_value:
            medication["coding"] = [{"system": "http://snomed.info/sct", "code": code_value,
                                     "display": name}]
        if medication:
            added.append({"resourceType": "MedicationStatement", "status": "active",
                          "subject": reference, "medicationCodeableConcept": medication})
    if not added:
        return document
    extended = dict(document)
    extended["entry"] = [*document["entry"], *(
        {"fullUrl": f"urn:pharmacy-record:{n}", "resource": r} for n, r in enumerate(added))]
    return extended


def _same_or_conflict(existing: Prescription, document: Any) -> Intake:
    stored = existing.source_bundle
    if _canonical_hash(stored) != _canonical_hash(document):
        raise Conflict(f"Prescription {existing.prescription_id} was already received with "
                       "different content.", prescription=existing.id)
    return Intake(existing, False)


def _prescription_type(parsed: ParsedPrescription | None) -> str:
    course = (parsed.course_of_therapy or "") if parsed is not None else ""
    if course in ("continuous", "continuous-repeat-dispensing"):
        return "repeat"
    if parsed is not None and any(i.repeats_allowed > 0 for i in parsed.items):
        return "repeat"
    return "acute"


def _issued_on(parsed: ParsedPrescription | None) -> date | None:
    if parsed is None:
        return None
    for item in parsed.items:
        authored = item.authored_on
        if isinstance(authored, datetime):
            return authored.astimezone(LONDON).date() if authored.tzinfo else authored.date()
        if isinstance(authored, date):
            return authored
    return None


def _item_row(session: Session, item: Any, n: int) -> PrescriptionItem:
    from ..models import Medicine

    medicine_id = None
    if item.formulary_code:
        medicine_id = session.scalar(select(Medicine.id).where(Medicine.code ==
                                                                item.formulary_code))
    quantity = item.quantity if isinstance(item.quantity, Decimal) and item.quantity > 0 else None
    return PrescriptionItem(
        line_id=(item.line_id or f"item-{n}")[:64],
        medicine_id=medicine_id,
        medication_code=(item.medication_code or "")[:64],
        medication_display=(item.medication_display or "(no name given)")[:300],
        quantity=quantity,
        quantity_unit=(item.quantity_unit or None) and item.quantity_unit[:50],
        dosage_text=item.dosage_text,
        supply_duration_days=(item.supply_duration_days if item.supply_duration_days
                              and item.supply_duration_days > 0 else None),
        repeats_allowed=max(0, item.repeats_allowed),
        cd_schedule=item.cd_schedule if item.cd_schedule in (1, 2, 3, 4, 5) else None,
        quantity_words=getattr(item, "quantity_words", None),
    )


def _link_patient(session: Session, parsed: ParsedPrescription,
                  report: ValidationReport) -> PatientProfile | None:
    """Find the patient by NHS number (or another identifier), creating them if new.

    A patient is never created from an NHS number that failed its check.
    """
    p = parsed.patient
    if p is None:
        return None
    bad_nhs = any(f.rule == "patient-identifier-invalid" for f in report.findings)
    patient = None
    if p.nhs_number and not bad_nhs:
        patient = session.scalar(select(PatientProfile).where(
            PatientProfile.nhs_number == p.nhs_number))
    other = p.other_identifiers[0] if p.other_identifiers else None
    if patient is None and other is not None:
        patient = session.scalar(select(PatientProfile).where(
            PatientProfile.other_identifier_system == other[0][:200],
            PatientProfile.other_identifier == other[1][:64]))
    if patient is not None:
        return patient
    if not ((p.nhs_number and not bad_nhs) or other) or p.birth_date is None:
        return None
    patient = PatientProfile(
        nhs_number=p.nhs_number if p.nhs_number and not bad_nhs else None,
        other_identifier_system=other[0][:200] if other and not p.nhs_number else None,
        other_identifier=other[1][:64] if other and not p.nhs_number else None,
        given_name=(p.given_name or "")[:100], family_name=(p.family_name or "(unknown)")[:100],
        date_of_birth=p.birth_date,
    )
    for substance in dict.fromkeys(s.strip()[:100] for s in p.allergies if s and s.strip()):
        patient.allergies.append(Allergy(substance=substance, recorded_at=utcnow()))
    session.add(patient)
    session.flush()
    audit.record(session, action="patient.created_from_prescription", entity_type="patient",
                 entity_id=patient.id)
    return patient


_REGISTERS = {
    "https://fhir.hl7.org.uk/Id/gmc-number": ("GMC", PrescriberProfession.DOCTOR),
    "https://fhir.hl7.org.uk/Id/nmc-number": ("NMC", PrescriberProfession.NURSE),
    "https://fhir.hl7.org.uk/Id/gphc-number": ("GPhC", PrescriberProfession.PHARMACIST),
    "http://hl7.org/fhir/sid/us-npi": ("NPI", PrescriberProfession.DOCTOR),
    "https://terminology.hl7.org/NamingSystem/usDEANumber": ("DEA", PrescriberProfession.DOCTOR),
}


def _link_prescriber(session: Session, parsed: ParsedPrescription,
                     report: ValidationReport) -> Prescriber | None:
    p = parsed.prescriber
    if p is None or any(f.rule.startswith("prescriber-identifier") for f in report.findings):
        return None
    for system, value in p.identifiers:
        if system not in _REGISTERS:
            continue
        body, profession = _REGISTERS[system]
        number = value.strip().upper()[:32]
        prescriber = session.scalar(select(Prescriber).where(
            Prescriber.registration_body == body, Prescriber.registration_number == number))
        if prescriber is None:
            prescriber = Prescriber(
                given_name=(p.given_name or None) and p.given_name[:100],
                family_name=(p.family_name or "(unknown)")[:100], profession=profession,
                registration_body=body, registration_number=number,
                organisation_ods_code=(p.organisation_ods_code or None)
                and p.organisation_ods_code[:16],
                organisation_name=(p.organisation_name or None) and p.organisation_name[:200])
            session.add(prescriber)
            session.flush()
        return prescriber
    return None


def _notify_patient(session: Session, patient: PatientProfile, kind: str, subject: str,
                    body: str) -> None:
    session.add(Notification(patient_id=patient.id, user_id=patient.user_id, kind=kind,
                             subject=subject, body=body))


# --- the pharmacist's queue and decisions ----------------------------------------------------

def get_prescription(
    session: Session, prescription_id: int, *, lock: bool = False
) -> Prescription:
    stmt = select(Prescription).where(Prescription.id == prescription_id)
    if lock:
        stmt = stmt.with_for_update()
    rx = session.scalar(stmt)
    if rx is None:
        raise NotFound(f"No prescription with id {prescription_id}.")
    return rx


def verification_queue(session: Session, *, statuses: Sequence[PrescriptionStatus] = OPEN_STATUSES,
                       limit: int = 200) -> list[Prescription]:
    """Open prescriptions: urgent first, then second checks, then oldest first."""
    second_first = case((Prescription.status == S.AWAITING_SECOND_CHECK, 0), else_=1)
    return list(session.scalars(
        select(Prescription).where(Prescription.status.in_(statuses))
        .order_by(Prescription.urgent.desc(), second_first, Prescription.received_at,
                  Prescription.id)
        .limit(limit)
    ))


@dataclass(frozen=True)
class Warning:
    """One warning of a stored OperationOutcome, addressable by its issue index."""

    key: str                # "issue-3": the index in the stored OperationOutcome
    rule: str
    diagnostics: str
    expression: str | None


def warnings_of(rx: Prescription) -> list[Warning]:
    issues = (rx.validation_outcome or {}).get("issue", [])
    out = []
    for index, issue in enumerate(issues):
        if issue.get("severity") != "warning":
            continue
        coding = (issue.get("details") or {}).get("coding") or [{}]
        expression = issue.get("expression") or [None]
        out.append(Warning(f"issue-{index}", str(coding[0].get("code", "unknown")),
                           str(issue.get("diagnostics", "")), expression[0]))
    return out


def _require_pharmacist(user: User) -> None:
    if user.role is not Role.PHARMACIST:
        raise Forbidden("Only a pharmacist may do this.")


def _review(session: Session, rx: Prescription, pharmacist: User, action: ReviewAction,
            reason: str | None, decisions: list[dict[str, str]] | None = None) -> None:
    session.add(PrescriptionReview(prescription_id=rx.id, reviewer_id=pharmacist.id,
                                   action=action, reason=reason,
                                   warning_decisions=decisions or []))


def verify(session: Session, rx: Prescription, pharmacist: User,
           decisions: Mapping[str, str], *, note: str | None = None,
           now: datetime | None = None, request_id: str | None = None) -> Prescription:
    """Record the clinical check. Every warning needs a reason in ``decisions[key]``.

    Schedule 2/3 controlled drugs then wait for a second, different pharmacist.
    """
    _require_pharmacist(pharmacist)
    now = now or utcnow()
    if rx.status is not S.AWAITING_VERIFICATION:
        raise InvalidTransition(f"Only a prescription awaiting verification can be verified "
                                f"(this one is {rx.status.value.replace('_', ' ')}).")
    _refuse_if_lapsed(session, rx, now)
    warnings = warnings_of(rx)
    missing = [w for w in warnings if not (decisions.get(w.key) or "").strip()]
    unknown = sorted(set(decisions) - {w.key for w in warnings})
    if missing or unknown:
        errors = [{"field": f"decisions.{w.key}",
                   "message": f"Record why you proceed despite '{w.rule}': {w.diagnostics}"}
                  for w in missing]
        errors += [{"field": f"decisions.{k}", "message": "No such warning."} for k in unknown]
        raise InvalidRequest("Every warning needs a recorded decision and reason.",
                             errors=errors)
    recorded = [{"key": w.key, "rule": w.rule, "decision": "proceed",
                 "reason": decisions[w.key].strip()} for w in warnings]
    overridden = sorted({w.rule for w in warnings})
    if rx.needs_second_check:
        before = _transition(rx, S.AWAITING_SECOND_CHECK)
        rx.first_checked_by_id, rx.first_checked_at = pharmacist.id, now
        action, review = "prescription.first_checked", ReviewAction.FIRST_CHECKED
    else:
        before = _transition(rx, S.VERIFIED)
        rx.decided_by_id, rx.decided_at, rx.decision_reason = pharmacist.id, now, note
        action, review = "prescription.verified", ReviewAction.VERIFIED
    _review(session, rx, pharmacist, review, note, recorded)
    audit.record(session, action=action, entity_type="prescription", entity_id=rx.id,
                 actor=pharmacist, request_id=request_id, reason=note,
                 before={"status": before.value},
                 after={"status": rx.status.value, "overridden_rules": overridden,
                        "decisions": recorded})
    session.flush()
    return rx


def second_check(session: Session, rx: Prescription, pharmacist: User, *,
                 note: str | None = None, now: datetime | None = None,
                 request_id: str | None = None) -> Prescription:
    """The second pharmacist's confirmation for Schedule 2/3 controlled drugs."""
    _require_pharmacist(pharmacist)
    if rx.status is not S.AWAITING_SECOND_CHECK:
        raise InvalidTransition("This prescription is not waiting for a second check.")
    if rx.first_checked_by_id == pharmacist.id:
        raise Forbidden("A pharmacist may not double-check their own verification; "
                        "another pharmacist must do the second check.")
    _refuse_if_lapsed(session, rx, now or utcnow())
    before = _transition(rx, S.VERIFIED)
    rx.decided_by_id, rx.decided_at, rx.decision_reason = pharmacist.id, now or utcnow(), note
    _review(session, rx, pharmacist, ReviewAction.SECOND_CHECKED, note)
    audit.record(session, action="prescription.second_checked", entity_type="prescription",
                 entity_id=rx.id, actor=pharmacist, request_id=request_id, reason=note,
                 before={"status": before.value, "first_checked_by": rx.first_checked_by_id},
                 after={"status": rx.status.value})
    session.flush()
    return rx


def _required_reason(reason: str | None, what: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise InvalidRequest(f"A {what} needs a reason.",
                             errors=[{"field": "reason", "message": f"Give the {what}."}])
    return text


def reject(session: Session, rx: Prescription, pharmacist: User, reason: str, *,
           now: datetime | None = None, request_id: str | None = None) -> Prescription:
    """Reject: the reason goes back to the prescriber, and the patient is told."""
    return _stop(session, rx, pharmacist, reason, S.REJECTED, ReviewAction.REJECTED,
                 what="rejecting", now=now, request_id=request_id,
                 subject="Your prescription could not be dispensed",
                 body="Our pharmacist could not dispense a prescription sent for you and has "
                      "contacted your prescriber. You do not need to do anything now.")


def _stop(session: Session, rx: Prescription, pharmacist: User, reason: str,
          new: PrescriptionStatus, action: ReviewAction, *, what: str, subject: str,
          body: str, now: datetime | None, request_id: str | None) -> Prescription:
    """Reject or withdraw: the decision with its reason, audited; the unpacked orders
    waiting for the prescription cancelled; the patient told."""
    _require_pharmacist(pharmacist)
    text = _required_reason(reason, f"reason for {what}")
    before = rx.status
    pulled_reason = f"prescription {action.value}: {text}"
    if new is S.CANCELLED and before is S.DISPENSED:
        # Dispensed into a parcel that has not reached the patient: that parcel is pulled
        # (cancelled if still here, recalled if out of the door), and the prescription stops.
        # The orders are locked and read before deciding: a courier may deliver meanwhile.
        pulled = _pull_orders_holding(session, rx, pharmacist, reason=pulled_reason)
        owed = end_owings(session, rx, pharmacist, reason=pulled_reason)
        if not pulled and not owed:
            _transition(rx, new)  # refused: supplied and delivered, nothing left to stop
        rx.status = S.CANCELLED
    else:
        _transition(rx, new)
        pulled = _pull_orders_holding(session, rx, pharmacist, reason=pulled_reason)
        end_owings(session, rx, pharmacist, reason=pulled_reason)
    rx.decided_by_id, rx.decided_at, rx.decision_reason = pharmacist.id, now or utcnow(), text
    _review(session, rx, pharmacist, action, text)
    audit.record(session, action=f"prescription.{action.value}", entity_type="prescription",
                 entity_id=rx.id, actor=pharmacist, request_id=request_id, reason=text,
                 before={"status": before.value},
                 after={"status": rx.status.value, "orders_cancelled": pulled.cancelled,
                        "parcels_recalled": pulled.recalled})
    if rx.patient is not None:
        _notify_patient(session, rx.patient, f"prescription.{action.value}", subject,
                        body + pulled.sentence())
    session.flush()
    return rx


@dataclass(frozen=True)
class Pulled:
    """The orders a stopped prescription took back: ids cancelled here, and recalled (now,
    or already on their way back for another prescription)."""

    cancelled: list[int]
    recalled: list[int]

    def __add__(self, other: Pulled) -> Pulled:
        return Pulled(self.cancelled + other.cancelled, self.recalled + other.recalled)

    def sentence(self) -> str:
        """What the patient is told about their orders."""
        text = ""
        if self.cancelled:
            text += (" The order waiting for it has been cancelled and any payment "
                     "released.")
        if self.recalled:
            text += (" The parcel on its way with it will not be delivered: it comes back "
                     "to us and you will be refunded for it in full. Once it is back, you "
                     "can order anything else it held again.")
        return text

    def __bool__(self) -> bool:
        return bool(self.cancelled or self.recalled)


def _orders_holding(session: Session, rx: Prescription, statuses: Sequence[OrderStatus], *,
                    lock: bool = False) -> list[Order]:
    from ..models import OrderLine

    query = select(Order).where(
        Order.id.in_(select(OrderLine.order_id).where(
            OrderLine.prescription_item_id.in_([i.id for i in rx.items]))),
        Order.status.in_(statuses)).order_by(Order.id)
    if lock:  # and read afresh: a courier may have moved one on since it was last read
        query = query.with_for_update().execution_options(populate_existing=True)
    return list(session.scalars(query))


def undelivered_orders(session: Session, rx: Prescription) -> list[Order]:
    """Orders holding this prescription's items that have not reached the patient, parcels
    already recalled and on their way back included: while there is one, the prescription
    can be withdrawn even if it was dispensed."""
    from .orders import ACTIVE_ORDER

    return _orders_holding(session, rx, ACTIVE_ORDER)


def _pull_orders_holding(session: Session, rx: Prescription, actor: User, *,
                         reason: str) -> Pulled:
    """Stop every order holding this prescription's items that has not reached the patient.

    Those not yet out of the door, packed ones included (a withdrawn medicine must not go
    out in a parcel packed before), are cancelled: their card holds are voided, their stock
    and delivery places released, and what was packed goes back to the shelf and is no
    longer counted as supplied. Parcels already with a courier, or back after a failed
    attempt, are recalled: the courier must not hand them over, and the pharmacy refunds
    them when they are back (`orders.recall`); one already recalled for another
    prescription counts as recalled."""
    from .checkout import cancel_order
    from .orders import ACTIVE_ORDER, RECALLABLE, recall

    cancelled: list[int] = []
    recalled: list[int] = []
    for order in _orders_holding(session, rx, ACTIVE_ORDER, lock=True):
        if order.status in RECALLABLE:
            recall(session, order, actor=actor, reason=reason)
            recalled.append(order.id)
        else:
            cancel_order(session, order, actor=actor, reason=reason)
            cancelled.append(order.id)
    return Pulled(cancelled, recalled)


def end_owings(session: Session, rx: Prescription, actor: User | None, *, reason: str,
               lines: Collection[str] | None = None) -> list[int]:
    """End what is still owed on this prescription's items (of ``lines`` only, if given):
    it stopped, lapsed or was superseded. Returns the items whose owing ended."""
    from .orders import lock_items, set_owed

    ended = []
    for item in lock_items(session, [i.id for i in rx.items if i.quantity_owed > 0]):
        if item.quantity_owed <= 0 or (lines is not None and item.line_id not in lines):
            continue
        set_owed(session, item, 0, actor=actor, reason=reason)
        ended.append(item.id)
    return ended


def end_owing(session: Session, item: PrescriptionItem, pharmacist: User, reason: str, *,
              request_id: str | None = None) -> None:
    """A pharmacist ends what is owed on an item (supplied at the counter, or no longer
    needed), with a reason; refused while an order for it waits to be packed."""
    from .orders import on_active_order

    _require_pharmacist(pharmacist)
    text = _required_reason(reason, "reason for ending the owing")
    if item.quantity_owed <= 0:
        raise InvalidTransition("Nothing is owed on this item.")
    if on_active_order(session, item.id, owing=True):
        raise InvalidTransition("An order for what is owed is waiting to be packed: pack it "
                                "or cancel it first.")
    end_owings(session, item.prescription, pharmacist, reason=text, lines={item.line_id})
    session.flush()


def withdraw(session: Session, rx: Prescription, pharmacist: User, reason: str, *,
             now: datetime | None = None, request_id: str | None = None) -> Prescription:
    """Stop a prescription that is not yet dispensed, verified ones included (a problem
    found after the check, the prescriber cancelling it): it can no longer be ordered or
    supplied, the unpacked orders waiting for it are cancelled, and the patient is told.

    Withdrawing any issue of a repeat batch, a dispensed one included, stops the whole
    batch: every issue not yet dispensed is withdrawn too and no further issue can be
    requested (see `repeats_stopped`).
    """
    original = _original_of(session, rx)
    if original.prescription_type != "repeat":
        return _stop(session, rx, pharmacist, reason, S.CANCELLED, ReviewAction.WITHDRAWN,
                     what="withdrawing", now=now, request_id=request_id,
                     subject="A prescription of yours has been stopped",
                     body="Our pharmacist has stopped a prescription sent for you and will "
                          "contact you or your prescriber if anything is needed.")
    return _stop_repeats(session, original, rx, pharmacist, reason, now=now or utcnow(),
                         request_id=request_id)


def _stop_repeats(session: Session, original: Prescription, rx: Prescription,
                  pharmacist: User, reason: str, *, now: datetime,
                  request_id: str | None) -> Prescription:
    _require_pharmacist(pharmacist)
    text = _required_reason(reason, "reason for withdrawing")
    # The same lock as request_repeat: no new issue appears while the batch is stopped.
    session.scalar(select(Prescription.id).where(Prescription.id == original.id)
                   .with_for_update())
    if repeats_stopped(session, original) is not None:
        raise InvalidTransition("This repeat prescription has already been stopped.",
                                current_status=rx.status.value)
    if rx.status is not S.DISPENSED and S.CANCELLED not in TRANSITIONS[rx.status]:
        _transition(rx, S.CANCELLED)  # refused, with the usual message
    pulled = Pulled([], [])
    withdrawn: list[int] = []
    for issue in _issues(session, original):
        before = issue.status
        # Parcels of the batch not yet delivered are pulled first: cancelling one packed
        # here reopens the issue it had dispensed, which is then withdrawn like the others;
        # an issue whose parcel is recalled from the road is withdrawn as it is.
        taken = _pull_orders_holding(session, issue, pharmacist,
                                     reason=f"prescription withdrawn: {text}")
        end_owings(session, issue, pharmacist, reason=f"prescription withdrawn: {text}")
        pulled += taken
        if taken.recalled and issue.status is S.DISPENSED:
            issue.status = S.VERIFIED  # its supply never reached the patient
        if issue is not rx and S.CANCELLED not in TRANSITIONS[issue.status]:
            continue  # dispensed and delivered, rejected, expired: nothing left to stop
        if S.CANCELLED in TRANSITIONS[issue.status]:
            _transition(issue, S.CANCELLED)
            issue.decided_by_id, issue.decided_at, issue.decision_reason = (
                pharmacist.id, now, text)
            withdrawn.append(issue.id)
        audit.record(session, action="prescription.withdrawn", entity_type="prescription",
                     entity_id=issue.id, actor=pharmacist, request_id=request_id, reason=text,
                     before={"status": before.value},
                     after={"status": issue.status.value, "repeats_stopped_by": rx.id})
    _review(session, rx, pharmacist, ReviewAction.WITHDRAWN, text)
    audit.record(session, action="prescription.repeats_stopped", entity_type="prescription",
                 entity_id=original.id, actor=pharmacist, request_id=request_id, reason=text,
                 before={"repeats_stopped": False, "repeats_issued": original.repeats_issued},
                 after={"repeats_stopped": True, "withdrawn_issue": rx.id,
                        "issues_cancelled": withdrawn, "orders_cancelled": pulled.cancelled,
                        "parcels_recalled": pulled.recalled})
    if rx.patient is not None:
        _notify_patient(session, rx.patient, "prescription.withdrawn",
                        "A repeat prescription of yours has been stopped",
                        "Our pharmacist has stopped a repeat prescription sent for you: no "
                        "further repeats of it will be issued. We will contact you or your "
                        "prescriber if anything is needed."
                        + pulled.sentence())
    session.flush()
    return rx


def query(session: Session, rx: Prescription, pharmacist: User, question: str, *,
          request_id: str | None = None) -> Prescription:
    """Put the prescription on hold with a question for the prescriber."""
    _require_pharmacist(pharmacist)
    text = _required_reason(question, "question for the prescriber")
    before = _transition(rx, S.QUERIED)
    rx.query_text = text
    _review(session, rx, pharmacist, ReviewAction.QUERIED, text)
    audit.record(session, action="prescription.queried", entity_type="prescription",
                 entity_id=rx.id, actor=pharmacist, request_id=request_id, reason=text,
                 before={"status": before.value}, after={"status": rx.status.value})
    session.flush()
    return rx


def answer_query(session: Session, rx: Prescription, pharmacist: User, answer: str, *,
                 request_id: str | None = None) -> Prescription:
    """Record the prescriber's answer and put the prescription back in the queue."""
    _require_pharmacist(pharmacist)
    text = _required_reason(answer, "prescriber's answer")
    if rx.status is not S.QUERIED:
        raise InvalidTransition("This prescription has no open query.")
    before = _transition(rx, S.AWAITING_VERIFICATION)
    _review(session, rx, pharmacist, ReviewAction.QUERY_ANSWERED, text)
    audit.record(session, action="prescription.query_answered", entity_type="prescription",
                 entity_id=rx.id, actor=pharmacist, request_id=request_id, reason=text,
                 before={"status": before.value}, after={"status": rx.status.value})
    session.flush()
    return rx


#: Findings that mean the prescription may no longer be supplied at all, whatever a
#: pharmacist decided when it arrived.
LAPSED_RULES = frozenset({"expired", "cd-expired"})


def lapsed(session: Session, rx: Prescription, *, now: datetime | None = None) -> str | None:
    """Why a prescription can no longer legally be supplied today (its 6-month, 28-day or
    stated validity has run out), or None.

    The intake check is re-run on the stored bundle at today's date. A later issue of a
    repeat batch is governed by the batch's own validity (see `repeat_status`): 12 months
    from when the batch was written, and the end date the prescriber gave each line.
    """
    if rx.original_id is not None:
        original = _original_of(session, rx)
        today = (now or utcnow()).astimezone(LONDON).date()
        if original.issued_on and today > _twelve_months_after(original.issued_on):
            return (f"This repeat batch was written on {original.issued_on:%-d %B %Y} and "
                    "its 12 months have run out.")
        # Like the original's check: one line past the end the prescriber gave is enough.
        ended = [end for item in rx.items
                 if (end := _validity_end(original, item.line_id)) is not None and today > end]
        if ended:
            return f"The prescriber made this repeat valid until {min(ended):%-d %B %Y}."
        return None
    if not rx.source_bundle:
        return None
    report = validate(session, rx.source_bundle, now=now)
    reasons = [f.diagnostics for f in report.findings if f.rule in LAPSED_RULES]
    return " ".join(reasons) or None


def lapsed_once(session: Session, rx: Prescription, seen: dict[int, str | None]) -> str | None:
    """`lapsed`, judged once per prescription while ``seen`` lives (a page, a checkout, a
    release): re-validating a bundle is the slow part."""
    if rx.id not in seen:
        seen[rx.id] = lapsed(session, rx)
    return seen[rx.id]


def lapsed_prescriptions(session: Session, *, now: datetime) -> list[int]:
    """Read only, no locks (it re-validates every bundle it reads, the slow part): ids of
    verified prescriptions, and of ones still waiting for a check or an answer, past their
    legal validity, and of dispensed ones that still owe units past it."""
    expirable = session.scalars(select(Prescription).where(
        Prescription.status.in_(EXPIRABLE)).order_by(Prescription.id)).all()
    owing = session.scalars(select(Prescription).where(
        Prescription.status == S.DISPENSED,
        Prescription.id.in_(select(PrescriptionItem.prescription_id).where(
            PrescriptionItem.quantity_owed > 0))).order_by(Prescription.id)).all()
    return [rx.id for rx in (*expirable, *owing) if lapsed(session, rx, now=now)]


#: Prescriptions that become expired when their legal validity runs out: verified ones,
#: and ones still waiting for a pharmacist's check or a prescriber's answer (nobody may
#: supply them now, so they leave the queue and the patient is told).
EXPIRABLE = (S.VERIFIED, *OPEN_STATUSES)


def expire_prescription(session: Session, rx_id: int, *, now: datetime) -> bool:
    """Expire one prescription past its legal validity (locked and checked again here): a
    verified or waiting one becomes expired; on a dispensed one what is still owed ends.
    Orders for it not yet packed are cancelled (card holds voided, stock and slots released:
    nothing could ever pick them), and the patient is told to ask their prescriber. False
    when there was nothing to do. The caller commits (one prescription per transaction)."""
    from .checkout import cancel_order
    from .orders import PRE_PACK

    rx = session.scalar(select(Prescription).where(Prescription.id == rx_id)
                        .with_for_update().execution_options(populate_existing=True))
    if rx is None or rx.status not in (*EXPIRABLE, S.DISPENSED):
        return False
    reason = lapsed(session, rx, now=now)
    if not reason or (rx.status is S.DISPENSED
                      and not any(i.quantity_owed > 0 for i in rx.items)):
        return False
    waiting = _orders_holding(session, rx, PRE_PACK, lock=True)
    for order in waiting:
        cancel_order(session, order, actor=None, reason=f"prescription expired: {reason}")
    ended = end_owings(session, rx, None, reason=f"prescription expired: {reason}")
    before = rx.status
    if rx.status in EXPIRABLE:
        _transition(rx, S.EXPIRED)
    audit.record(session, action="prescription.expired", entity_type="prescription",
                 entity_id=rx.id, actor=None, reason=reason, before={"status": before.value},
                 after={"status": rx.status.value, "orders_cancelled": [o.id for o in waiting],
                        "owings_ended": ended})
    if rx.patient is not None:  # messages never name medicines (privacy)
        _notify_patient(session, rx.patient, "prescription.expired",
                        "A prescription of yours has expired",
                        "A prescription we hold for you has passed the date until which the "
                        "law lets us supply it"
                        + (", so what we still owed you on it can no longer be supplied"
                           if ended else "")
                        + ". Please ask your prescriber for a new one if you still need it."
                        + (" The order waiting for it has been cancelled (all of it, with "
                           "anything else it held) and any payment released; you can order "
                           "the rest again." if waiting else ""))
    session.flush()
    return True


def expire_lapsed(session: Session, *, now: datetime | None = None) -> list[int]:
    """Expire every prescription past its legal validity (`expire_prescription`), each in
    its own savepoint: one that fails is logged and left for the next run. The nightly job
    commits each one on its own instead. Returns the ids changed."""
    now = now or utcnow()
    done: list[int] = []
    for rx_id in lapsed_prescriptions(session, now=now):
        try:
            with session.begin_nested():
                if expire_prescription(session, rx_id, now=now):
                    done.append(rx_id)
        except Exception:
            logger.exception("could not expire prescription %s", rx_id)
    return done


def _refuse_if_lapsed(session: Session, rx: Prescription, now: datetime) -> None:
    reason = lapsed(session, rx, now=now)
    if reason:
        raise InvalidTransition(f"This prescription can no longer be supplied: {reason} "
                                "Reject it and ask the prescriber for a new one.")


# Called once per item when it is supplied; the controlled-drug register (inventory issue)
# subscribes here. Each hook gets (session, prescription, item, actor).
DispenseHook = Callable[[Session, Prescription, PrescriptionItem, User], None]
dispense_hooks: list[DispenseHook] = []


def item_supplied_at(item: PrescriptionItem) -> datetime | None:
    """When the item was supplied on its issue, or None while it has not been.

    Items dispensed before they were tracked one by one have no time of their own: their
    issue's dispensing time stands for them.
    """
    if item.supplied_at is not None:
        return item.supplied_at
    rx = item.prescription
    return rx.dispensed_at if rx.status is S.DISPENSED else None


def _supply(session: Session, rx: Prescription, items: Sequence[PrescriptionItem],
            pharmacist: User, now: datetime, request_id: str | None) -> None:
    """Record the supply of ``items``; dispense the issue once every item is supplied.

    The issue's row is locked and its items read afresh first: two orders packing two
    items of one issue at the same moment would otherwise each see the other item still
    unsupplied, and the issue would never be dispensed."""
    session.scalar(select(Prescription.id).where(Prescription.id == rx.id).with_for_update())
    session.scalars(select(PrescriptionItem).where(PrescriptionItem.prescription_id == rx.id)
                    .execution_options(populate_existing=True)).all()
    for item in items:
        if item.prescription_id != rx.id or item.supplied_at is not None:
            continue
        item.supplied_at = now
        for hook in dispense_hooks:
            hook(session, rx, item, pharmacist)
        audit.record(session, action="prescription.item_supplied", entity_type="prescription",
                     entity_id=rx.id, actor=pharmacist, request_id=request_id,
                     before={"item": item.id, "supplied_at": None},
                     after={"item": item.id, "line": item.line_id,
                            "supplied_at": now.isoformat()})
    if all(item.supplied_at is not None for item in rx.items):
        before = _transition(rx, S.DISPENSED)
        rx.dispensed_at = now
        audit.record(session, action="prescription.dispensed", entity_type="prescription",
                     entity_id=rx.id, actor=pharmacist, request_id=request_id,
                     before={"status": before.value}, after={"status": rx.status.value})
    session.flush()


def undo_supply(session: Session, items: Sequence[PrescriptionItem], actor: User | None, *,
                reason: str, request_id: str | None = None) -> None:
    """Items packed on an order that never reached the patient (cancelled after packing, or
    the parcel came back) are not supplied after all: they can be ordered again on their
    issue, their next repeat is not counted from that packing, and an issue this had
    dispensed is open again."""
    for rx_id in sorted({item.prescription_id for item in items}):
        rx = session.scalar(select(Prescription).where(Prescription.id == rx_id)
                            .with_for_update())
        assert rx is not None
        undone = [item for item in items
                  if item.prescription_id == rx_id and item.supplied_at is not None]
        if not undone:
            continue
        for item in undone:
            supplied_at = item.supplied_at.isoformat() if item.supplied_at else None
            audit.record(session, action="prescription.item_supply_undone",
                         entity_type="prescription", entity_id=rx.id, actor=actor,
                         request_id=request_id, reason=reason,
                         before={"item": item.id, "supplied_at": supplied_at},
                         after={"item": item.id, "supplied_at": None})
            item.supplied_at = None
        if rx.status is S.DISPENSED:
            rx.status, rx.dispensed_at = S.VERIFIED, None  # not a review decision: undone
            audit.record(session, action="prescription.dispensing_undone",
                         entity_type="prescription", entity_id=rx.id, actor=actor,
                         request_id=request_id, reason=reason,
                         before={"status": S.DISPENSED.value}, after={"status": rx.status.value})
    session.flush()


def _refuse_unless_verified(rx: Prescription) -> None:
    if rx.status is not S.VERIFIED:
        raise InvalidTransition(f"Only a verified prescription can be dispensed (this one is "
                                f"{rx.status.value.replace('_', ' ')}).")


def record_supply(session: Session, rx: Prescription, items: Sequence[PrescriptionItem],
                  pharmacist: User, *, now: datetime | None = None,
                  request_id: str | None = None) -> Prescription:
    """Record that some items of a verified prescription were supplied (packed).

    Each item is supplied once: it cannot be ordered again on this issue, and its next
    repeat is due from this supply, whatever happens to the issue's other items. The issue
    is dispensed when its last item is supplied.
    """
    _require_pharmacist(pharmacist)
    _refuse_unless_verified(rx)
    now = now or utcnow()
    _refuse_if_lapsed(session, rx, now)
    _supply(session, rx, items, pharmacist, now, request_id)
    return rx


def mark_dispensed(session: Session, rx: Prescription, pharmacist: User, *,
                   now: datetime | None = None, request_id: str | None = None) -> Prescription:
    """Record that a verified prescription was dispensed (never a rejected or open one):
    the items not yet supplied are supplied now."""
    _require_pharmacist(pharmacist)
    _refuse_unless_verified(rx)
    now = now or utcnow()
    _refuse_if_lapsed(session, rx, now)
    _supply(session, rx, rx.items, pharmacist, now, request_id)
    return rx


# --- repeats ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RepeatStatus:
    """Whether an item can be re-ordered now, and if not, when and why."""

    item: PrescriptionItem
    can_order: bool
    earliest: date | None
    reason: str
    remaining: int


def _issues(session: Session, original: Prescription) -> list[Prescription]:
    return list(session.scalars(
        select(Prescription).where((Prescription.id == original.id)
                                   | (Prescription.original_id == original.id))
        .order_by(Prescription.issue_number)
    ))


def _original_of(session: Session, rx: Prescription) -> Prescription:
    original = session.get(Prescription, rx.original_id) if rx.original_id else rx
    assert original is not None
    return original


def _line_rows(issues: Sequence[Prescription], line_id: str) -> list[PrescriptionItem]:
    """One line of a repeat batch as each issue that carried it, oldest first. An issue
    carries only the lines that were due, so lines of one batch move on at their own pace."""
    return [i for issue in issues for i in issue.items if i.line_id == line_id]


def repeats_stopped(session: Session, original: Prescription) -> PrescriptionReview | None:
    """The pharmacist's withdrawal that stopped a repeat batch, if any: withdrawing any
    issue of the batch, dispensed ones included, stops the repeats still to come."""
    batch = select(Prescription.id).where((Prescription.id == original.id)
                                          | (Prescription.original_id == original.id))
    return session.scalar(
        select(PrescriptionReview).where(PrescriptionReview.prescription_id.in_(batch),
                                         PrescriptionReview.action == ReviewAction.WITHDRAWN)
        .order_by(PrescriptionReview.id).limit(1))


def _twelve_months_after(day: date) -> date:
    """A repeat batch is valid for 12 months from when it was written: the same date a
    year on (28 February for a batch written on 29 February)."""
    try:
        return day.replace(year=day.year + 1)
    except ValueError:
        return day.replace(year=day.year + 1, day=28)


def repeat_status(session: Session, item: PrescriptionItem, today: date) -> RepeatStatus:
    """Electronic repeat dispensing: issues become orderable 7 days before they are due.

    Judged per line: the next issue of a line is due the day the line's latest supply was
    supplied plus its supply duration; each line allows its own ``numberOfRepeatsAllowed +
    1`` issues, all within 12 months of the batch being written; Schedule 2/3 controlled
    drugs never repeat, and a batch a pharmacist stopped (withdrew) repeats no more.
    """
    original = _original_of(session, item.prescription)
    rows = _line_rows(_issues(session, original), item.line_id)
    current = rows[-1] if rows else item
    source = next((i for i in original.items if i.line_id == item.line_id), None)
    allowed = source.repeats_allowed if source is not None else 0
    remaining = max(0, allowed + 1 - len(rows))

    def no(reason: str, earliest: date | None = None) -> RepeatStatus:
        return RepeatStatus(item, False, earliest, reason, remaining)

    if item.cd_schedule in SECOND_CHECK_SCHEDULES:
        return no("Schedule 2 and 3 controlled drugs cannot be repeated; ask your prescriber "
                  "for a new prescription.")
    if original.prescription_type != "repeat" or allowed == 0:
        return no("This was a one-off prescription; ask your prescriber for a new one.")
    stopped = repeats_stopped(session, original)
    if stopped is not None:
        return RepeatStatus(item, False, None, "Our pharmacist stopped this repeat "
                            f"prescription on {stopped.created_at.astimezone(LONDON):%-d %B %Y}"
                            "; ask your prescriber if you still need it.", 0)
    if remaining == 0:
        return no("All repeats on this prescription have been used; ask your prescriber to "
                  "re-authorise it.")
    if original.issued_on and today > _twelve_months_after(original.issued_on):
        return no("This repeat prescription is more than 12 months old; ask your prescriber "
                  "to renew it.")
    ends = _validity_end(original, item.line_id)
    if ends is not None and today > ends:
        return no(f"Your prescriber made this prescription valid until {ends:%-d %B %Y}; ask "
                  "them to renew it.")
    supplied = item_supplied_at(current)
    if supplied is None:
        latest = current.prescription
        if latest.status in OPEN_STATUSES or latest.status is S.VERIFIED:
            return no("Your last issue is still being prepared.")
        return no(f"Your last issue was {latest.status.value.replace('_', ' ')}; "
                  "ask your prescriber.")
    supply = current.supply_duration_days or 28
    due = supplied.astimezone(LONDON).date() + timedelta(days=supply)
    earliest = due - timedelta(days=REPEAT_LEAD_DAYS)
    if today < earliest:
        return no(f"You can order this from {earliest:%-d %B %Y}, 7 days before your current "
                  f"supply runs out on {due:%-d %B %Y}.", earliest)
    return RepeatStatus(item, True, earliest, "You can order this now.", remaining)


def _validity_end(original: Prescription, line_id: str) -> date | None:
    """The last day the prescriber allowed for this item (validityPeriod.end), if stated.

    Read by the intake parser on the stored bundle, without the formulary (dates do not
    depend on it): "My medicines" asks this for every repeat item it lists, and loading the
    formulary from the database for each would be wasted work.
    """
    from .rx_rules import validate_bundle
    from .rx_rules.types import FormularyView

    if not original.source_bundle:
        return None
    parsed = validate_bundle(original.source_bundle, FormularyView({}, {}, ()),
                             now=utcnow()).parsed
    if parsed is None:
        return None
    return next((i.validity_end for i in parsed.items if i.line_id == line_id), None)


def request_repeat(session: Session, patient: PatientProfile, item_id: int, *,
                   actor: User, now: datetime | None = None,
                   request_id: str | None = None) -> tuple[RepeatStatus, Prescription | None]:
    """A patient asks for the next issue of a repeat item they hold.

    When allowed, a new issue of the prescription is created and queued for a pharmacist
    (the clinical check happens at every issue). It carries the asked-for item and every
    other item of the batch that is orderable too (due within the 7 days' lead), never one
    that is not yet due. Otherwise nothing changes and the returned status says when it
    can be ordered and why.
    """
    now = now or utcnow()
    today = now.astimezone(LONDON).date()
    item = session.get(PrescriptionItem, item_id)
    if item is None or item.prescription.patient_id != patient.id:
        raise NotFound(f"You hold no prescription item {item_id}.")
    original = _original_of(session, item.prescription)
    # Lock the original so two requests cannot both create the next issue.
    session.scalar(select(Prescription.id).where(Prescription.id == original.id)
                   .with_for_update())
    status = repeat_status(session, item, today)
    if not status.can_order:
        return status, None
    issues = _issues(session, original)
    issue_number = len(issues) + 1
    new = Prescription(
        prescription_id=f"{original.prescription_id[:58]}/{issue_number}",
        patient_id=original.patient_id, prescriber_id=original.prescriber_id,
        pharmacy_id=original.pharmacy_id, status=S.AWAITING_VERIFICATION,
        prescription_type="repeat", issued_on=today, received_at=now,
        repeats_allowed=0, needs_second_check=original.needs_second_check,
        original_id=original.id, issue_number=issue_number,
        source_bundle=original.source_bundle, validation_outcome=original.validation_outcome,
    )
    # Only the items due now, each within its own repeats, never a Schedule 2/3 drug.
    due = [source for source in original.items
           if repeat_status(session, source, today).can_order]
    for source in due:
        new.items.append(PrescriptionItem(
            line_id=source.line_id, medicine_id=source.medicine_id,
            medication_code=source.medication_code, medication_display=source.medication_display,
            quantity=source.quantity, quantity_unit=source.quantity_unit,
            dosage_text=source.dosage_text, supply_duration_days=source.supply_duration_days,
            repeats_allowed=0, cd_schedule=source.cd_schedule))
    session.add(new)
    # Lines repeat at their own pace: the batch has issued as many repeats as its most
    # repeated line (so never more than the largest numberOfRepeatsAllowed).
    carried = {source.line_id for source in due}
    for issue in issues:  # a new issue of a line supersedes what an earlier one still owed
        end_owings(session, issue, actor, reason=f"superseded by issue {issue_number}",
                   lines=carried)
    original.repeats_issued = max(
        len(_line_rows(issues, source.line_id)) + (source.line_id in carried) - 1
        for source in original.items)
    session.flush()
    audit.record(session, action="prescription.repeat_issued", entity_type="prescription",
                 entity_id=new.id, actor=actor, request_id=request_id,
                 after={"original": original.id, "issue_number": issue_number,
                        "status": new.status.value, "lines": sorted(carried)})
    return status, new


def my_medicines(session: Session, patient: PatientProfile, today: date) -> list[RepeatStatus]:
    """Each item the patient holds on a repeat prescription, with whether it can be ordered.

    One entry per line of each original prescription, judged on the latest issue that
    carried it; a line whose repeats are used up drops off once a later issue leaves it out.
    """
    originals = session.scalars(
        select(Prescription).where(Prescription.patient_id == patient.id,
                                   Prescription.original_id.is_(None),
                                   Prescription.prescription_type == "repeat",
                                   Prescription.status.notin_([S.REJECTED, S.CANCELLED]))
        .order_by(Prescription.received_at.desc(), Prescription.id.desc())
    ).all()
    statuses = []
    for original in originals:
        issues = _issues(session, original)
        for source in original.items:
            rows = _line_rows(issues, source.line_id)
            current = rows[-1]
            # A line whose repeats are used up leaves the list once its last issue is
            # supplied (or can no longer be), never while that issue is still to be had.
            if (current.prescription is not issues[-1]
                    and len(rows) >= source.repeats_allowed + 1
                    and (item_supplied_at(current) is not None
                         or current.prescription.status not in (*OPEN_STATUSES, S.VERIFIED))):
                continue
            statuses.append(repeat_status(session, current, today))
    return statuses
