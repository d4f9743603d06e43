"""Prescriptions: FHIR intake and validation, the pharmacist's workflow, patients' repeats."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, current_app, g, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint

from ..errors import DomainError, Forbidden
from ..extensions import db
from ..models import PrescriptionStatus, Role
from ..models.base import utcnow
from ..schemas.prescriptions import (
    AnswerSchema,
    FhirResourceSchema,
    IntakeResultSchema,
    MyMedicineSchema,
    NoteSchema,
    PrescriptionDetailSchema,
    PrescriptionSummarySchema,
    QuestionSchema,
    QueueQuerySchema,
    ReasonSchema,
    RepeatRequestSchema,
    VerifySchema,
)
from ..services import prescriptions as rx_service
from .security import BEARER_DOC, current_api_user, require_roles, require_roles_per_view

blp = Blueprint("api_prescriptions", __name__, url_prefix="/api/v1/prescriptions",
                description="Electronic prescriptions (FHIR R4) and their verification")
me_blp = Blueprint("api_me", __name__, url_prefix="/api/v1/me",
                   description="The signed-in patient's own medicines")
blp.before_request(require_roles(Role.PHARMACIST, Role.API_CLIENT))
_PHARMACIST = (Role.PHARMACIST,)
blp.before_request(require_roles_per_view({
    ("PrescriptionCollection", "POST"): (Role.API_CLIENT,),
    ("PrescriptionCollection", "GET"): _PHARMACIST,
    ("PrescriptionItemResource", "GET"): _PHARMACIST,
    ("VerificationResource", "POST"): _PHARMACIST,
    ("SecondCheckResource", "POST"): _PHARMACIST,
    ("RejectionResource", "POST"): _PHARMACIST,
    ("WithdrawalResource", "POST"): _PHARMACIST,
    ("QueryResource", "POST"): _PHARMACIST,
    ("QueryAnswerResource", "POST"): _PHARMACIST,
    ("DispensingResource", "POST"): _PHARMACIST,
}))
me_blp.before_request(require_roles(Role.PATIENT))

FHIR_TYPES = {"application/fhir+json", "application/json"}
_FHIR_BODY = {"requestBody": {"required": True, "content": {
    t: {"schema": FhirResourceSchema} for t in sorted(FHIR_TYPES)}}}
_ID = "<int(max=2147483647):prescription_id>"


class FhirBodyError(DomainError):
    """Unreadable FHIR input; answered as an OperationOutcome."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _operation_outcome(status: int, message: str) -> Response:
    response = jsonify(rx_service.operation_outcome_for_error("bundle-invalid", message))
    response.status_code = status
    response.mimetype = "application/fhir+json"
    return response


@blp.errorhandler(FhirBodyError)
def _fhir_body_error(err: FhirBodyError) -> Response:
    db.session.rollback()
    return _operation_outcome(err.status, err.detail)


def _read_fhir_body() -> Any:
    """The request's FHIR JSON, or a 4xx OperationOutcome: type, size and shape checked."""
    mimetype = (request.mimetype or "").lower()
    if mimetype not in FHIR_TYPES:
        raise FhirBodyError(415, "Send the Bundle as application/fhir+json or application/json.")
    limit = int(current_app.config["FHIR_MAX_BUNDLE_BYTES"])
    if request.content_length is not None and request.content_length > limit:
        raise FhirBodyError(413, f"The Bundle is larger than {limit} bytes.")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise FhirBodyError(413, f"The Bundle is larger than {limit} bytes.")
    try:
        return rx_service.parse_fhir_json(raw)
    except rx_service.FhirInputError as exc:
        raise FhirBodyError(400, exc.detail) from None


FHIR_JSON = "application/fhir+json"
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _has_forbidden_characters(value: Any) -> bool:
    """Whether any key or string in a parsed JSON document breaks FHIR's string rule."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _FORBIDDEN.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _pharmacist() -> Any:
    user = current_api_user()
    if user.role is not Role.PHARMACIST:
        raise Forbidden("Only pharmacists may do this.")
    return user


@blp.route("/$validate")
class ValidateResource(MethodView):
    @blp.doc(**BEARER_DOC, **_FHIR_BODY)
    @blp.response(200, FhirResourceSchema, content_type="application/fhir+json",
                  description="OperationOutcome: every finding, or one 'valid' issue")
    @blp.alt_response(400, schema=FhirResourceSchema, content_type=FHIR_JSON,
                      description="Not JSON (bundle-invalid)")
    @blp.alt_response(401, description="Missing or invalid token")
    @blp.alt_response(403, description="Role may not validate")
    @blp.alt_response(413, schema=FhirResourceSchema, content_type=FHIR_JSON,
                      description="Bundle too large")
    @blp.alt_response(415, schema=FhirResourceSchema, content_type=FHIR_JSON,
                      description="Not a JSON content type")
    def post(self) -> Response:
        """Validate a prescription Bundle; stores and changes nothing."""
        document = _read_fhir_body()
        report = rx_service.validate(db.session, document, now=utcnow())
        db.session.rollback()
        response = jsonify(report.to_operation_outcome())
        response.mimetype = "application/fhir+json"
        return response


@blp.route("")
class PrescriptionCollection(MethodView):
    @blp.doc(**BEARER_DOC, **_FHIR_BODY)
    @blp.response(201, IntakeResultSchema, description="Stored (queued, or rejected with "
                  "the outcome saying why); 200 when the same prescription was sent before")
    @blp.alt_response(200, schema=IntakeResultSchema, description="Already received")
    @blp.alt_response(400, schema=FhirResourceSchema, content_type=FHIR_JSON,
                      description="Not JSON, or holds characters FHIR strings may not contain")
    @blp.alt_response(401, description="Missing or invalid token")
    @blp.alt_response(403, description="Only prescribing systems send prescriptions")
    @blp.alt_response(409, description="Same prescription id, different content")
    @blp.alt_response(413, schema=FhirResourceSchema, content_type=FHIR_JSON,
                      description="Bundle too large")
    @blp.alt_response(415, schema=FhirResourceSchema, content_type=FHIR_JSON,
                      description="Not a JSON content type")
    def post(self) -> Any:
        """Receive a prescription from a prescribing system (idempotent on its id)."""
        user = current_api_user()
        if user.role is not Role.API_CLIENT:
            raise Forbidden("Only prescribing systems send prescriptions.")
        document = _read_fhir_body()
        if _has_forbidden_characters(document):
            # Such a Bundle cannot even be kept as received (PostgreSQL text holds no NUL).
            raise FhirBodyError(400, "The Bundle holds control characters, which FHIR strings "
                                     "may not contain (below U+0020 other than tab, CR, LF).")
        intake = rx_service.receive_prescription(db.session, document, actor=user,
                                                 request_id=g.get("request_id"))
        db.session.commit()
        rx = intake.prescription
        body = {"id": rx.id, "prescription_id": rx.prescription_id, "status": rx.status.value,
                "created": intake.created, "outcome": rx.validation_outcome or {}}
        return body, (201 if intake.created else 200)

    @blp.doc(**BEARER_DOC)
    @blp.arguments(QueueQuerySchema, location="query")
    @blp.response(200, PrescriptionSummarySchema(many=True))
    @blp.alt_response(401, description="Missing or invalid token")
    @blp.alt_response(403, description="Pharmacists only")
    @blp.alt_response(422, description="Invalid query")
    def get(self, args: dict[str, Any]) -> Any:
        """The verification queue: urgent first, then oldest."""
        _pharmacist()
        statuses = [PrescriptionStatus(s) for s in args.get("status", [])] or list(
            rx_service.OPEN_STATUSES)
        return rx_service.verification_queue(db.session, statuses=statuses,
                                             limit=args["limit"])


def _detail(prescription_id: int) -> Any:
    return rx_service.get_prescription(db.session, prescription_id)


_ERRORS = [(401, "Missing or invalid token"), (403, "Pharmacists only"),
           (404, "No such prescription"), (409, "Not allowed in its current status"),
           (422, "Invalid request")]


def _document_errors(func: Any) -> Any:
    for status, text in _ERRORS:
        func = blp.alt_response(status, description=text)(func)
    return blp.doc(**BEARER_DOC)(func)


@blp.route(f"/{_ID}")
class PrescriptionItemResource(MethodView):
    @_document_errors
    @blp.response(200, PrescriptionDetailSchema)
    def get(self, prescription_id: int) -> Any:
        """A prescription with its items, warnings, outcome and reviews."""
        _pharmacist()
        return _detail(prescription_id)


def _act(prescription_id: int, action: Any) -> Any:
    pharmacist = _pharmacist()
    rx = rx_service.get_prescription(db.session, prescription_id, lock=True)
    action(rx, pharmacist)
    db.session.commit()
    return rx


@blp.route(f"/{_ID}/verification")
class VerificationResource(MethodView):
    @_document_errors
    @blp.arguments(VerifySchema)
    @blp.response(200, PrescriptionDetailSchema)
    def post(self, body: dict[str, Any], prescription_id: int) -> Any:
        """Verify (clinical check). Give a reason for every warning; Schedule 2/3 drugs then
        await a second pharmacist."""
        return _act(prescription_id, lambda rx, who: rx_service.verify(
            db.session, rx, who, body["decisions"], note=body.get("note"),
            request_id=g.get("request_id")))


@blp.route(f"/{_ID}/second-check")
class SecondCheckResource(MethodView):
    @_document_errors
    @blp.arguments(NoteSchema)
    @blp.response(200, PrescriptionDetailSchema)
    def post(self, body: dict[str, Any], prescription_id: int) -> Any:
        """Second pharmacist's check of a Schedule 2/3 controlled drug (not the first one's)."""
        return _act(prescription_id, lambda rx, who: rx_service.second_check(
            db.session, rx, who, note=body.get("note"), request_id=g.get("request_id")))


@blp.route(f"/{_ID}/rejection")
class RejectionResource(MethodView):
    @_document_errors
    @blp.arguments(ReasonSchema)
    @blp.response(200, PrescriptionDetailSchema)
    def post(self, body: dict[str, Any], prescription_id: int) -> Any:
        """Reject with a reason for the prescriber; the patient is notified."""
        return _act(prescription_id, lambda rx, who: rx_service.reject(
            db.session, rx, who, body["reason"], request_id=g.get("request_id")))


@blp.route(f"/{_ID}/withdrawal")
class WithdrawalResource(MethodView):
    @_document_errors
    @blp.arguments(ReasonSchema)
    @blp.response(200, PrescriptionDetailSchema)
    def post(self, body: dict[str, Any], prescription_id: int) -> Any:
        """Withdraw a prescription not yet dispensed (verified ones too), with the reason;
        orders waiting for it are cancelled and the patient is notified."""
        return _act(prescription_id, lambda rx, who: rx_service.withdraw(
            db.session, rx, who, body["reason"], request_id=g.get("request_id")))


@blp.route(f"/{_ID}/query")
class QueryResource(MethodView):
    @_document_errors
    @blp.arguments(QuestionSchema)
    @blp.response(200, PrescriptionDetailSchema)
    def post(self, body: dict[str, Any], prescription_id: int) -> Any:
        """Query the prescriber; the prescription is on hold until answered."""
        return _act(prescription_id, lambda rx, who: rx_service.query(
            db.session, rx, who, body["question"], request_id=g.get("request_id")))


@blp.route(f"/{_ID}/query-answer")
class QueryAnswerResource(MethodView):
    @_document_errors
    @blp.arguments(AnswerSchema)
    @blp.response(200, PrescriptionDetailSchema)
    def post(self, body: dict[str, Any], prescription_id: int) -> Any:
        """Record the prescriber's answer; back into the queue."""
        return _act(prescription_id, lambda rx, who: rx_service.answer_query(
            db.session, rx, who, body["answer"], request_id=g.get("request_id")))


@blp.route(f"/{_ID}/dispensing")
class DispensingResource(MethodView):
    @_document_errors
    @blp.response(200, PrescriptionDetailSchema)
    def post(self, prescription_id: int) -> Any:
        """Record that a verified prescription was dispensed."""
        return _act(prescription_id, lambda rx, who: rx_service.mark_dispensed(
            db.session, rx, who, request_id=g.get("request_id")))


def _patient() -> Any:
    user = current_api_user()
    if user.patient is None:
        raise Forbidden("This account has no patient record.")
    return user.patient


def _my_medicine(status: rx_service.RepeatStatus) -> dict[str, Any]:
    return {"item_id": status.item.id, "prescription_id": status.item.prescription_id,
            "medication_display": status.item.medication_display,
            "dosage_text": status.item.dosage_text, "can_order": status.can_order,
            "earliest_order_date": status.earliest, "reason": status.reason,
            "repeats_remaining": status.remaining}


@me_blp.route("/medicines")
class MyMedicines(MethodView):
    @me_blp.doc(**BEARER_DOC)
    @me_blp.response(200, MyMedicineSchema(many=True))
    @me_blp.alt_response(401, description="Missing or invalid token")
    @me_blp.alt_response(403, description="Patients only")
    def get(self) -> Any:
        """Repeat items I hold, with when each can next be ordered and why."""
        today = utcnow().astimezone(rx_service.LONDON).date()
        return [_my_medicine(s) for s in rx_service.my_medicines(db.session, _patient(), today)]


class RepeatNotAvailable(DomainError):
    status, code, title = 409, "repeat_not_available", "Conflict"


@me_blp.route("/repeat-requests")
class RepeatRequests(MethodView):
    @me_blp.doc(**BEARER_DOC)
    @me_blp.arguments(RepeatRequestSchema)
    @me_blp.response(201, PrescriptionSummarySchema, description="A new issue, queued for a "
                     "pharmacist")
    @me_blp.alt_response(401, description="Missing or invalid token")
    @me_blp.alt_response(403, description="Patients only")
    @me_blp.alt_response(404, description="Not an item you hold")
    @me_blp.alt_response(409, description="Not orderable yet: says when and why")
    @me_blp.alt_response(422, description="Invalid request")
    def post(self, body: dict[str, Any]) -> Any:
        """Ask for the next issue of a repeat item."""
        user = current_api_user()
        status, new = rx_service.request_repeat(db.session, _patient(), body["item_id"],
                                                actor=user, request_id=g.get("request_id"))
        if new is None:
            db.session.rollback()
            raise RepeatNotAvailable(status.reason, earliest_order_date=(
                status.earliest.isoformat() if status.earliest else None))
        db.session.commit()
        return new
