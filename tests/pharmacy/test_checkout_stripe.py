"""Checkout against a real localstripe: authorise, capture at dispatch, void, partial supply."""

from __future__ import annotations

import pytest

from pharmacy.models import Order, Payment, PaymentStatus
from tests.payments.conftest import DECLINED, VISA
from tests.pharmacy.test_orders_api import _address, _auth, _slot, world  # noqa: F401


@pytest.fixture()
def shopper(client, db, world, stripe_config):  # type: ignore[no-untyped-def] # noqa: F811
    headers = _auth(client, world["patient"])
    staff = _auth(client, world["pharmacist"])

    def place(card_id: str, *, packs: int = 2, key: str | None = None) -> dict:  # type: ignore[type-arg]
        body = {"lines": [{"medicine_id": world["otc"].id, "quantity": packs}],
                "address_id": _address(db, world["patient"]),
                "slot_id": _slot(client, headers), "payment_method": card_id}
        extra = {"Idempotency-Key": key} if key else {}
        response = client.post("/api/v1/orders", json=body, headers=headers | extra)
        assert response.status_code == 201, response.get_json()
        return response.get_json()  # type: ignore[no-any-return]

    def move(order_id: int, to: str, **extra: object) -> dict:  # type: ignore[type-arg]
        response = client.post(f"/api/v1/orders/{order_id}/transitions",
                               json={"to": to, **extra}, headers=staff)
        assert response.status_code == 200, response.get_json()
        return response.get_json()  # type: ignore[no-any-return]

    return {"place": place, "move": move, "headers": headers, "staff": staff}


def test_authorise_at_checkout_then_capture_at_dispatch(client, db, shopper, card,  # noqa: F811
                                                       stripe_client) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    order = shopper["place"](card(VISA))
    assert order["status"] == "ready_to_pick"
    assert order["payment"]["status"] == "authorised"
    assert order["payment"]["amount_captured_minor"] == 0
    shopper["move"](order["id"], "packed")
    dispatched = shopper["move"](order["id"], "out_for_delivery")
    assert dispatched["payment"]["status"] == "captured"
    assert dispatched["payment"]["amount_captured_minor"] == order["total_minor"]
    pi = stripe_client.v1.payment_intents.retrieve(
        db.session.query(Payment).filter_by(order_id=order["id"]).one().provider_payment_id)
    assert pi.status == "succeeded"


def test_cancel_before_dispatch_voids_the_authorisation(client, db, shopper, card) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    order = shopper["place"](card(VISA))
    response = client.post(f"/api/v1/orders/{order['id']}/cancellation",
                           json={"reason": "pharmacist rejected the item"},
                           headers=shopper["staff"])
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert response.get_json()["payment"]["status"] == "cancelled"


def test_partial_supply_captures_only_what_was_supplied(client, db, shopper, card, world) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    order = shopper["place"](card(VISA), packs=2)
    line_id = order["lines"][0]["id"]
    packed = shopper["move"](order["id"], "packed", supplied={str(line_id): 30})
    assert packed["total_minor"] == world["otc"].unit_price_minor
    dispatched = shopper["move"](order["id"], "out_for_delivery")
    assert dispatched["payment"]["amount_captured_minor"] == world["otc"].unit_price_minor
    # The parcel comes back: what was charged is refunded.
    shopper["move"](order["id"], "failed", reason="not at home")
    shopper["move"](order["id"], "returned")
    refunded = shopper["move"](order["id"], "refunded", reason="returned to pharmacy")
    assert refunded["payment"]["amount_refunded_minor"] == world["otc"].unit_price_minor


def test_a_declined_card_leaves_the_order_unpaid_with_a_clear_message(
        client, db, shopper, card) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    order = shopper["place"](card(DECLINED))
    assert order["status"] == "placed"
    assert order["payment"]["status"] == "failed"
    assert "declined" in order["payment"]["message"].lower()
    assert db.session.get(Order, order["id"]).status.value == "placed"
    # Paying again with a good card completes the same order.
    retry = client.post(f"/api/v1/orders/{order['id']}/payment",
                        json={"payment_method": card(VISA)}, headers=shopper["headers"])
    assert retry.status_code == 200, retry.get_json()
    assert retry.get_json()["payment"]["status"] == "authorised"
    assert retry.get_json()["status"] == "ready_to_pick"


def test_replayed_checkout_makes_one_order_and_one_payment_intent(
        client, db, shopper, card) -> None:  # type: ignore[no-untyped-def] # noqa: F811
    method = card(VISA)
    first = shopper["place"](method, key="replay-key-0001")
    second = shopper["place"](method, key="replay-key-0001")
    assert first["id"] == second["id"]
    payments = db.session.query(Payment).filter_by(order_id=first["id"]).all()
    assert len(payments) == 1 and payments[0].status is PaymentStatus.AUTHORISED
