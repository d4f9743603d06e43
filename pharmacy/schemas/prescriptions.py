from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..models import PrescriptionStatus

_STATUS = [s.value for s in PrescriptionStatus]


class FhirResourceSchema(Schema):
    """A FHIR R4 resource as JSON (Bundle in, OperationOutcome out)."""

    class Meta:
        unknown = "include"

    resourceType = fields.String(required=True)  # noqa: N815 (FHIR's own name)


class QueueQuerySchema(Schema):
    status = fields.List(fields.String(validate=validate.OneOf(_STATUS)),
                         metadata={"description": "Default: the open statuses"})
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


class WarningSchema(Schema):
    key = fields.String(required=True, metadata={"description": "Use as the key in decisions"})
    rule = fields.String(required=True)
    diagnostics = fields.String(required=True)
    expression = fields.String(allow_none=True)


class ItemSchema(Schema):
    id = fields.Integer(required=True)
    line_id = fields.String(required=True)
    medication_code = fields.String(required=True)
    medication_display = fields.String(required=True)
    medicine_id = fields.Integer(allow_none=True)
    quantity = fields.Decimal(as_string=True, allow_none=True)
    quantity_unit = fields.String(allow_none=True)
    dosage_text = fields.String(allow_none=True)
    supply_duration_days = fields.Integer(allow_none=True)
    repeats_allowed = fields.Integer(required=True)
    cd_schedule = fields.Integer(allow_none=True)
    quantity_owed = fields.Integer(metadata={
        "description": "Units still owed after a short supply: an order line for this item "
                       "then supplies them, charged the share of the item charge not yet paid"})


class PrescriptionSummarySchema(Schema):
    id = fields.Integer(required=True)
    prescription_id = fields.String(required=True)
    status = fields.Function(lambda rx: rx.status.value, required=True,
                             metadata={"enum": _STATUS})
    urgent = fields.Boolean(required=True)
    needs_second_check = fields.Boolean(required=True)
    received_at = fields.DateTime(required=True)
    patient_id = fields.Integer(allow_none=True)
    issue_number = fields.Integer(required=True)


class ReviewSchema(Schema):
    action = fields.Function(lambda r: r.action.value, required=True)
    reviewer_id = fields.Integer(required=True)
    reason = fields.String(allow_none=True)
    warning_decisions = fields.List(fields.Dict(), required=True)
    created_at = fields.DateTime(required=True)


class PrescriptionDetailSchema(PrescriptionSummarySchema):
    prescription_type = fields.String(required=True)
    issued_on = fields.Date(allow_none=True)
    repeats_allowed = fields.Integer(required=True)
    repeats_issued = fields.Integer(required=True)
    prescriber_id = fields.Integer(allow_none=True)
    first_checked_by_id = fields.Integer(allow_none=True)
    decided_by_id = fields.Integer(allow_none=True)
    decision_reason = fields.String(allow_none=True)
    query_text = fields.String(allow_none=True)
    items = fields.List(fields.Nested(ItemSchema), required=True)
    warnings = fields.Method("_warnings", required=True)
    validation_outcome = fields.Dict(allow_none=True)
    reviews = fields.List(fields.Nested(ReviewSchema), required=True)

    def _warnings(self, rx):  # type: ignore[no-untyped-def]
        from ..services.prescriptions import warnings_of

        return WarningSchema(many=True).dump(warnings_of(rx))


class IntakeResultSchema(Schema):
    id = fields.Integer(required=True)
    prescription_id = fields.String(required=True)
    status = fields.String(required=True)
    created = fields.Boolean(required=True)
    outcome = fields.Dict(required=True, metadata={"description": "FHIR OperationOutcome"})


class VerifySchema(Schema):
    decisions = fields.Dict(keys=fields.String(validate=validate.Length(max=32)),
                            values=fields.String(validate=validate.Length(max=2000)),
                            load_default=dict,
                            metadata={"description": "Warning key -> the reason to proceed"})
    note = fields.String(validate=validate.Length(max=2000), allow_none=True)


class NoteSchema(Schema):
    note = fields.String(validate=validate.Length(max=2000), allow_none=True)


class ReasonSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class QuestionSchema(Schema):
    question = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class AnswerSchema(Schema):
    answer = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class RepeatRequestSchema(Schema):
    item_id = fields.Integer(required=True, strict=True,
                             validate=validate.Range(min=1, max=2_147_483_647))


class MyMedicineSchema(Schema):
    item_id = fields.Integer(required=True)
    prescription_id = fields.Integer(required=True)
    medication_display = fields.String(required=True)
    dosage_text = fields.String(allow_none=True)
    can_order = fields.Boolean(required=True)
    earliest_order_date = fields.Date(allow_none=True)
    reason = fields.String(required=True)
    repeats_remaining = fields.Integer(required=True)
