from __future__ import annotations

from marshmallow import Schema, fields, validate


class TokenRequestSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(min=3, max=254))
    password = fields.String(required=True, validate=validate.Length(min=1, max=1024),
                             load_only=True)
    totp = fields.String(
        load_default=None, validate=validate.Length(min=6, max=40), load_only=True,
        metadata={"description": "The current 6-digit code of the account's authenticator app "
                  "(or one of its single-use recovery codes); required for accounts with "
                  "two-step sign-in on (pharmacists and admins may turn it on), ignored "
                  "otherwise.", "example": "123456"})


class TokenSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds"})


class UserSchema(Schema):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    full_name = fields.String(required=True)
    role = fields.Function(lambda u: u.role.value, required=True)
