from __future__ import annotations

from marshmallow import Schema, fields, validate


class MedicineQuerySchema(Schema):
    q = fields.String(validate=validate.Length(max=100), metadata={"description": "Name contains"})
    prescription_only = fields.Boolean()
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10_000))
    page_size = fields.Integer(load_default=50,
                               validate=validate.Range(min=1, max=200))


class MedicineSchema(Schema):
    id = fields.Integer(required=True)
    code = fields.String(required=True, metadata={"description": "dm+d VMP id (SNOMED CT)"})
    name = fields.String(required=True)
    ingredient = fields.String(required=True)
    strength = fields.String(allow_none=True)
    form = fields.String(required=True)
    atc = fields.String(allow_none=True)
    cd_schedule = fields.Integer(allow_none=True)
    cold_chain = fields.Boolean(required=True)
    prescription_only = fields.Boolean(required=True)
    pack_size = fields.Integer(allow_none=True)
    pack_unit = fields.String(allow_none=True)
    unit_price_minor = fields.Integer(required=True)


class MedicinePageSchema(Schema):
    items = fields.List(fields.Nested(MedicineSchema), required=True)
    page = fields.Integer(required=True)
    page_size = fields.Integer(required=True)
    total = fields.Integer(required=True)
