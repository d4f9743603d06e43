"""Orders: checkout (idempotent), payment, tracking, cancellation; the pharmacy's transitions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app, g, request
from flask.views import MethodView
from flask_smorest import Blueprint

from ..errors import Conflict, Forbidden
from ..extensions import commit_keeping_loaded, db
from ..models import Order, OrderStatus, Pharmacy, Role
from ..schemas.orders import (
    CancelSchema,
    IdempotencyHeaderSchema,
    OrderInSchema,
    OrderOutSchema,
    PaymentInSchema,
    RebookInSchema,
    SlotOutSchema,
    SlotQuerySchema,
    TransitionSchema,
)
from ..services import checkout, inventory_ledger, orders, rebooking, slots
from ..web.forms import whole_number
from .security import BEARER_DOC, current_api_user, require_roles, require_roles_per_view

blp = Blueprint("api_orders", __name__, url_prefix="/api/v1/orders",
                description="Orders, checkout and tracking")
slots_blp = Blueprint("api_slots", __name__, url_prefix="/api/v1/slots",
                      description="Delivery slots")
blp.before_request(require_roles(Role.PATIENT, Role.PHARMACIST, Role.ADMIN))
_STAFF = (Role.PHARMACIST, Role.ADMIN)
blp.before_request(require_roles_per_view({
    ("OrderCollection", "POST"): (Role.PATIENT,),
    ("OrderCollection", "GET"): (Role.PATIENT,),
    ("OrderPayment", "POST"): (Role.PATIENT,),
    ("OrderPaymentConfirmation", "POST"): (Role.PATIENT,),
    ("OrderDeliverySlot", "POST"): (Role.PATIENT,),
    ("OrderTransitions", "POST"): _STAFF,
}))
slots_blp.before_request(require_roles(Role.PATIENT))


@blp.before_request
def _own_orders_only() -> None:
    """A patient naming another patient's order gets 404 before its body is even read."""
    order_id = (request.view_args or {}).get("order_id")
    user = current_api_user()
    if order_id is not None and user.role is Role.PATIENT:
        if user.patient is None:
            raise Forbidden("This account has no patient record.")
        orders.get_patient_order(db.session, user.patient, int(order_id))

_ID = "<int(max=2147483647):order_id>"


def pricing() -> orders.Pricing:
    return orders.Pricing.from_config(current_app.config)


def _patient() -> Any:
    user = current_api_user()
    if user.role is not Role.PATIENT or user.patient is None:
        raise Forbidden("Only patients with a patient record can do this.")
    return user.patient


def _order_for_caller(order_id: int, *, lock: bool = False) -> Order:
    """Patients see their own orders (another's is 404); pharmacy staff see all."""
    user = current_api_user()
    if user.role is Role.PATIENT:
        return orders.get_patient_order(db.session, _patient(), order_id, lock=lock)
    return orders.get_order(db.session, order_id, lock=lock)


def _body(result: checkout.CheckoutResult | Order) -> dict[str, Any]:
    order = result.order if isinstance(result, checkout.CheckoutResult) else result
    body: dict[str, Any] = {name: getattr(order, name) for name in (
        "id", "reference", "currency", "subtotal_minor", "prescription_charge_minor",
        "delivery_fee_minor", "total_minor", "delivery_window_start", "delivery_window_end",
        "placed_at", "cancel_reason", "recalled_at", "recall_reason")}
    body["status"] = order.status.value
    body["lines"] = [{
        "id": line.id, "medicine_id": line.medicine_id, "name": line.medicine.name,
        "prescription_item_id": line.prescription_item_id, "quantity": line.quantity,
        "quantity_supplied": line.quantity_supplied, "line_total_minor": line.line_total_minor,
        "status": line.status, "cold_chain": line.medicine.cold_chain} for line in order.lines]
    body["payment"] = None
    payment = checkout.latest_payment(order)
    if payment is not None:
        body["payment"] = {
            "status": payment.status.value, "amount_minor": payment.amount_minor,
            "amount_captured_minor": payment.amount_captured_minor,
            "amount_refunded_minor": payment.amount_refunded_minor,
            "message": payment.last_error,
            "client_secret": (result.client_secret
                              if isinstance(result, checkout.CheckoutResult) else None)}
    return body


_ERRORS = [(401, "Missing or invalid token"), (403, "Not allowed for your role"),
           (404, "No such order (or not yours)"), (409, "Not allowed in its current status"),
           (422, "Invalid request")]


def _document(bp: Blueprint, extra: tuple[tuple[int, str], ...] = ()) -> Any:
    def wrap(func: Any) -> Any:
        for status, text in (*_ERRORS, *extra):
            func = bp.alt_response(status, description=text)(func)
        return bp.doc(**BEARER_DOC)(func)
    return wrap


@blp.route("")
class OrderCollection(MethodView):
    @_document(blp, ((402, "Card declined: the order stays unpaid"),
                     (503, "Payment provider unavailable")))
    @blp.arguments(IdempotencyHeaderSchema, location="headers")
    @blp.arguments(OrderInSchema)
    @blp.response(201, OrderOutSchema)
    def post(self, headers: dict[str, Any], body: dict[str, Any]) -> Any:
        """Check out: reserve stock and the slot, then authorise the card if one is given.

        Send an `Idempotency-Key` header: the same key with the same body returns the first
        order; with a different body it is a 422.
        """
        patient = _patient()
        user = current_api_user()
        request_model = orders.OrderRequest(
            lines=[orders.LineRequest(prescription_item_id=line.get("prescription_item_id"),
                                      medicine_id=line.get("medicine_id"),
                                      quantity=line["quantity"]) for line in body["lines"]],
            address_id=body["address_id"], slot_id=body["slot_id"])
        try:
            placed = orders.place_order(
                db.session, patient, request_model, actor=user, pricing=pricing(),
                idempotency_key=headers.get("idempotency_key"), request_id=g.get("request_id"),
                hold_for=timedelta(minutes=current_app.config["ORDER_HOLD_MINUTES"]))
        except orders.OutOfStock as err:
            orders.keep_lost_demand(db.session, err, patient=patient)
            raise  # 409
        # What was just written stays loaded (payment re-reads the order under its lock).
        commit_keeping_loaded(db.session)
        order = placed.order
        result: checkout.CheckoutResult | Order = order
        if body.get("payment_method") or order.total_minor == 0:
            result = checkout.authorise(db.session, order, actor=user,
                                        payment_method=body.get("payment_method"),
                                        save_card=body["save_card"],
                                        request_id=g.get("request_id"))
        # Built before the commit, from the rows this transaction holds, so that nothing
        # is read back after it; a failed commit answers an error instead.
        response = _body(result)
        db.session.commit()
        return response, 201

    @_document(blp)
    @blp.response(200, OrderOutSchema(many=True))
    def get(self) -> Any:
        """My orders, newest first."""
        return [_body(o) for o in orders.patient_orders(db.session, _patient())]


@blp.route(f"/{_ID}")
class OrderItem(MethodView):
    @_document(blp)
    @blp.response(200, OrderOutSchema)
    def get(self, order_id: int) -> Any:
        """One order, for tracking.

        When the delivery needs a new slot (the planner could not fit it, or the courier
        could not deliver), `rebook` says why; choose one of `GET /api/v1/slots` and send it
        to `POST /api/v1/orders/{order_id}/delivery-slot`.
        """
        order = _order_for_caller(order_id)
        body = _body(order)
        reason = rebooking.rebook_reason(db.session, order)
        body["rebook"] = ({"kind": reason.kind, "message": reason.message}
                          if reason is not None else None)
        return body


@blp.route(f"/{_ID}/payment")
class OrderPayment(MethodView):
    @_document(blp, ((402, "Card declined"), (503, "Payment provider unavailable")))
    @blp.arguments(PaymentInSchema)
    @blp.response(200, OrderOutSchema)
    def post(self, body: dict[str, Any], order_id: int) -> Any:
        """Pay for a placed order (again, after a decline, with another card)."""
        _patient()
        order = _order_for_caller(order_id, lock=True)
        if order.status is not OrderStatus.PLACED:
            return _body(order)
        result = checkout.authorise(db.session, order, actor=current_api_user(),
                                    payment_method=body.get("payment_method"),
                                    save_card=body["save_card"], request_id=g.get("request_id"))
        db.session.commit()
        return _body(result)


@blp.route(f"/{_ID}/payment-confirmation")
class OrderPaymentConfirmation(MethodView):
    @_document(blp)
    @blp.response(200, OrderOutSchema)
    def post(self, order_id: int) -> Any:
        """After the page finished 3-D Secure: re-check the payment."""
        _patient()
        order = _order_for_caller(order_id, lock=True)
        result = checkout.confirm(db.session, order, actor=current_api_user(),
                                  request_id=g.get("request_id"))
        db.session.commit()
        return _body(result)


@blp.route(f"/{_ID}/cancellation")
class OrderCancellation(MethodView):
    @_document(blp)
    @blp.arguments(CancelSchema)
    @blp.response(200, OrderOutSchema)
    def post(self, body: dict[str, Any], order_id: int) -> Any:
        """Cancel before dispatch; the card authorisation is released (or refunded)."""
        order = _order_for_caller(order_id, lock=True)
        checkout.cancel_order(db.session, order, actor=current_api_user(),
                              reason=body["reason"], request_id=g.get("request_id"))
        db.session.commit()
        return _body(order)


@blp.route(f"/{_ID}/delivery-slot")
class OrderDeliverySlot(MethodView):
    @_document(blp)
    @blp.arguments(RebookInSchema)
    @blp.response(200, OrderOutSchema)
    def post(self, body: dict[str, Any], order_id: int) -> Any:
        """Choose another delivery slot after a failed or unplannable delivery.

        Possible while the order is packed and its stop could not be planned, or after a
        failed delivery attempt (before the parcel is returned). The same request sent again
        answers the order as it is. 409 when the order is not waiting for a new slot or the
        slot is full, has no fridge place or is past its cut-off; 422 for a slot we do not
        offer this order.
        """
        _patient()
        order = _order_for_caller(order_id, lock=True)
        rebooking.rebook_delivery(db.session, order, body["slot_id"], actor=current_api_user(),
                                  request_id=g.get("request_id"))
        response = _body(order)
        db.session.commit()
        return response


@blp.route(f"/{_ID}/transitions")
class OrderTransitions(MethodView):
    @_document(blp, ((402, "No authorised payment to capture"),))
    @blp.arguments(TransitionSchema)
    @blp.response(200, OrderOutSchema)
    def post(self, body: dict[str, Any], order_id: int) -> Any:
        """Pharmacy staff move an order on (packing records the units supplied)."""
        user = current_api_user()
        if user.role not in (Role.PHARMACIST, Role.ADMIN):
            raise Forbidden("Only pharmacy staff move orders on.")
        order = orders.get_order(db.session, order_id, lock=True)
        target = OrderStatus(body["to"])
        rid = g.get("request_id")
        if order.recalled_at is not None and target in (
                OrderStatus.FAILED, OrderStatus.RETURNED, OrderStatus.REFUNDED):
            raise Conflict("This parcel was recalled: receive it at "
                           "/pharmacist/recalled-parcels (that closes its stop, refunds it "
                           "and tells the patient).",
                           current_status=order.status.value)
        if target is OrderStatus.PACKED:
            supplied = {line_id: v for k, v in (body.get("supplied") or {}).items()
                        if (line_id := whole_number(k)) is not None}
            orders.pack(db.session, order, actor=user, supplied=supplied, request_id=rid,
                        register_schedules=inventory_ledger.register_schedules(
                            current_app.config.get("CD_REGISTER_SCHEDULES")))
        elif target is OrderStatus.OUT_FOR_DELIVERY:
            checkout.dispatch(db.session, order, actor=user, request_id=rid)
        elif target is OrderStatus.REFUNDED:
            checkout.refund_returned(db.session, order, actor=user,
                                     reason=body.get("reason") or "returned", request_id=rid)
        else:
            orders.advance(db.session, order, target, actor=user, reason=body.get("reason"),
                           request_id=rid)
        db.session.commit()
        from ..jobs.outbox import relay_now

        relay_now()
        return _body(order)


@slots_blp.route("")
class SlotCollection(MethodView):
    @_document(slots_blp)
    @slots_blp.arguments(SlotQuerySchema, location="query")
    @slots_blp.response(200, SlotOutSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """Bookable delivery slots from your pharmacy (fridge vans only, for cold items)."""
        patient = _patient()
        pharmacy = db.session.get(Pharmacy, patient.nominated_pharmacy_id) if (
            patient.nominated_pharmacy_id) else None
        if pharmacy is None:
            return []
        views = slots.available_slots(db.session, pharmacy, needs_fridge=args["needs_fridge"],
                                      days=args["days"])
        db.session.commit()  # slots are created on first look
        return [{"id": v.slot.id, "starts_at": v.slot.starts_at, "ends_at": v.slot.ends_at,
                 "cutoff_at": v.slot.cutoff_at, "remaining": v.remaining,
                 "fridge_remaining": v.fridge_remaining} for v in views]
