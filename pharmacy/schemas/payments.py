"""Payments: the Stripe webhook receipt and patients' saved cards."""

from __future__ import annotations

from marshmallow import Schema, fields


class WebhookReceiptSchema(Schema):
    received = fields.Boolean(required=True)
    outcome = fields.String(required=True, metadata={
        "description": "processed | unchanged | duplicate | ignored | unknown_payment"})


class StripeEventSchema(Schema):
    """The part of a Stripe event the endpoint relies on (documentation only)."""

    id = fields.String(required=True, metadata={"example": "evt_1Nx..."})
    type = fields.String(required=True, metadata={"example": "payment_intent.succeeded"})
    created = fields.Integer()
    data = fields.Dict(required=True)


class SetupIntentSchema(Schema):
    client_secret = fields.String(required=True, metadata={
        "description": "For Stripe.js confirmCardSetup; never stored by the server"})


class CardSchema(Schema):
    id = fields.String(required=True, metadata={"description": "Stripe PaymentMethod id"})
    brand = fields.String(required=True, metadata={"example": "visa"})
    last4 = fields.String(required=True, metadata={"example": "4242"})
    exp_month = fields.Integer(required=True)
    exp_year = fields.Integer(required=True)
