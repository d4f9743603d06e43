"""Schemas shared by every API area."""

from __future__ import annotations

from marshmallow import Schema, fields


class FieldErrorSchema(Schema):
    field = fields.String(required=True, metadata={"description": "Dotted path of the field"})
    message = fields.String(required=True)


class ProblemSchema(Schema):
    """RFC 9457 problem details, the body of every API error."""

    type = fields.String(required=True, metadata={"example": "about:blank"})
    title = fields.String(required=True, metadata={"example": "Not Found"})
    status = fields.Integer(required=True, metadata={"example": 404})
    detail = fields.String(metadata={"example": "No such order"})
    code = fields.String(metadata={"description": "Stable machine-readable error code"})
    errors = fields.List(fields.Nested(FieldErrorSchema))
