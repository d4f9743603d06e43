from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from ..models import OrderStatus

_ID = validate.Range(min=1, max=2_147_483_647)


class LineInSchema(Schema):
    prescription_item_id = fields.Integer(strict=True, validate=_ID)
    medicine_id = fields.Integer(strict=True, validate=_ID)
    quantity = fields.Integer(strict=True, load_default=1, validate=validate.Range(min=1, max=99),
                              metadata={"description": "Packs, for over-the-counter products"})

    @validates_schema
    def _one_kind(self, data: dict, **kwargs: object) -> None:  # type: ignore[type-arg]
        if ("prescription_item_id" in data) == ("medicine_id" in data):
            raise ValidationError("Give either prescription_item_id or medicine_id.")


class OrderInSchema(Schema):
    lines = fields.List(fields.Nested(LineInSchema), required=True,
                        validate=validate.Length(min=1, max=30))
    address_id = fields.Integer(required=True, strict=True, validate=_ID)
    slot_id = fields.Integer(required=True, strict=True, validate=_ID)
    payment_method = fields.String(validate=validate.Length(max=100),
                                   metadata={"description": "A Stripe PaymentMethod id"})
    save_card = fields.Boolean(load_default=False)


class PaymentInSchema(Schema):
    payment_method = fields.String(validate=validate.Length(max=100))
    save_card = fields.Boolean(load_default=False)


class IdempotencyHeaderSchema(Schema):
    class Meta:
        unknown = "exclude"

    idempotency_key = fields.String(data_key="Idempotency-Key",
                                    validate=validate.Length(min=8, max=100),
                                    metadata={"description": "Repeat a checkout safely"})


class LineOutSchema(Schema):
    id = fields.Integer(required=True)
    medicine_id = fields.Integer(required=True)
    name = fields.String(required=True)
    prescription_item_id = fields.Integer(allow_none=True)
    quantity = fields.Integer(required=True)
    quantity_supplied = fields.Integer(allow_none=True)
    line_total_minor = fields.Integer(required=True)
    status = fields.String(required=True)
    cold_chain = fields.Boolean(required=True)


class PaymentOutSchema(Schema):
    status = fields.String(required=True)
    amount_minor = fields.Integer(required=True)
    amount_captured_minor = fields.Integer(required=True)
    amount_refunded_minor = fields.Integer(required=True)
    message = fields.String(allow_none=True)
    client_secret = fields.String(allow_none=True, metadata={
        "description": "For Stripe.js to finish 3-D Secure; only in the checkout answer"})


class RebookOutSchema(Schema):
    kind = fields.String(required=True, metadata={"enum": ["unserved", "failed", "missed"]})
    message = fields.String(required=True, metadata={"description": "Why, in plain words"})


class OrderOutSchema(Schema):
    id = fields.Integer(required=True)
    reference = fields.String(required=True)
    status = fields.String(required=True, metadata={"enum": [s.value for s in OrderStatus]})
    currency = fields.String(required=True)
    subtotal_minor = fields.Integer(required=True)
    prescription_charge_minor = fields.Integer(required=True)
    delivery_fee_minor = fields.Integer(required=True)
    total_minor = fields.Integer(required=True)
    delivery_window_start = fields.DateTime(allow_none=True)
    delivery_window_end = fields.DateTime(allow_none=True)
    placed_at = fields.DateTime(allow_none=True)
    lines = fields.List(fields.Nested(LineOutSchema), required=True)
    payment = fields.Nested(PaymentOutSchema, allow_none=True)
    cancel_reason = fields.String(allow_none=True)
    recalled_at = fields.DateTime(allow_none=True, metadata={
        "description": "Set when the pharmacy recalled the parcel after it left (a "
                       "medicine on it was withdrawn): it will not be delivered, and it is "
                       "refunded when it is back"})
    recall_reason = fields.String(allow_none=True)
    rebook = fields.Nested(RebookOutSchema, allow_none=True, metadata={
        "description": "On one order's page: why it needs a new delivery slot, else null"})


class SlotQuerySchema(Schema):
    needs_fridge = fields.Boolean(load_default=False)
    days = fields.Integer(load_default=3, validate=validate.Range(min=1, max=14))


class SlotOutSchema(Schema):
    id = fields.Integer(required=True)
    starts_at = fields.DateTime(required=True)
    ends_at = fields.DateTime(required=True)
    cutoff_at = fields.DateTime(required=True)
    remaining = fields.Integer(required=True)
    fridge_remaining = fields.Integer(required=True)


class RebookInSchema(Schema):
    slot_id = fields.Integer(required=True, strict=True, validate=_ID, metadata={
        "description": "A slot from GET /api/v1/slots (fridge slots for cold items)"})


class CancelSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class TransitionSchema(Schema):
    to = fields.String(required=True, validate=validate.OneOf(
        ["ready_to_pick", "packed", "out_for_delivery", "delivered", "failed", "returned",
         "refunded"]))
    supplied = fields.Dict(keys=fields.String(), values=fields.Integer(
        strict=True, validate=validate.Range(min=0, max=100_000)),
        metadata={"description": "For 'packed': order line id -> units supplied"})
    reason = fields.String(validate=validate.Length(max=500))
