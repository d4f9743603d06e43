"""Checkouts refused for lack of stock are kept as lost demand and counted back into the
demand the forecast learns from (on PostgreSQL, through the API and the pages)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from pharmacy.models import (
    LostDemand,
    Order,
    OrderLine,
    OrderStatus,
    Role,
    StockBatch,
    StockMovement,
)
from pharmacy.services import forecasting
from pharmacy.services.basket import SAFETY_QUESTIONS
from tests.factories import (
    DEFAULT_PASSWORD,
    MedicineFactory,
    PatientFactory,
    PharmacyFactory,
    UserFactory,
)
from tests.pharmacy.helpers import api_token, csrf_token, shopper, web_login

TODAY = datetime.now(UTC).date()


@pytest.fixture()
def shop(db):  # type: ignore[no-untyped-def]
    pharmacy = PharmacyFactory()
    scarce = MedicineFactory(name="Loratadine 10mg tablets", prescription_only=False,
                             pack_size=1, unit_price_minor=300)
    gone = MedicineFactory(name="Ibuprofen 200mg tablets", prescription_only=False,
                           pack_size=1, unit_price_minor=200)
    plenty = MedicineFactory(name="Paracetamol 500mg tablets", prescription_only=False,
                             pack_size=1, unit_price_minor=100)
    batches = {}
    for medicine, units in ((scarce, 1), (gone, 0), (plenty, 10)):
        batch = StockBatch(pharmacy_id=pharmacy.id, medicine=medicine,
                           lot_number=f"L{medicine.code}", quantity_on_hand=units,
                           expiry_date=date.today() + timedelta(days=400))
        db.session.add(batch)
        db.session.add(StockMovement(batch=batch, kind="received", on_hand_change=units))
        batches[medicine.name] = batch
    user, patient, address, slot = shopper(db, pharmacy, slot_capacity=100)
    return {"pharmacy": pharmacy, "user": user, "patient": patient, "address": address,
            "slot": slot, "scarce": scarce, "gone": gone, "plenty": plenty,
            "batches": batches}


def _order(client, shop, lines):  # type: ignore[no-untyped-def]
    headers = {"Authorization": "Bearer "
               + api_token(client, shop["user"].email, DEFAULT_PASSWORD)}
    return client.post("/api/v1/orders", headers=headers, json={
        "lines": [{"medicine_id": m.id, "quantity": q} for m, q in lines],
        "address_id": shop["address"].id, "slot_id": shop["slot"].id})


def test_a_refused_checkout_is_kept_as_lost_demand_and_counted_once_per_patient_and_day(  # type: ignore[no-untyped-def]
        client, db, shop) -> None:
    scarce, gone, plenty = shop["scarce"], shop["gone"], shop["plenty"]
    basket = [(scarce, 2), (gone, 1), (plenty, 1)]
    refused = _order(client, shop, basket)
    assert refused.status_code == 409
    problem = refused.get_json()
    assert problem["code"] == "out_of_stock"
    assert scarce.name in problem["detail"] and gone.name in problem["detail"]
    assert plenty.name not in problem["detail"]
    assert "available" not in problem  # how much is on the shelf is not told

    db.session.expire_all()
    assert db.session.scalars(select(Order)).all() == []  # the checkout itself left nothing
    for batch in shop["batches"].values():
        db.session.refresh(batch)
        assert batch.quantity_reserved == 0
    rows = db.session.scalars(select(LostDemand).order_by(LostDemand.medicine_id)).all()
    assert {(r.medicine_id, r.quantity, r.available, r.patient_id) for r in rows} == {
        (scarce.id, 2, 1, shop["patient"].id), (gone.id, 1, 0, shop["patient"].id)}
    assert all(r.pharmacy_id == shop["pharmacy"].id and r.occurred_at.tzinfo for r in rows)

    # The phone retries the same basket: another refusal on record, the same wish.
    assert _order(client, shop, basket).status_code == 409
    assert len(db.session.scalars(select(LostDemand)).all()) == 4
    pharmacy_id = shop["pharmacy"].id
    unmet = forecasting.unmet_demand(db.session, pharmacy_id, since=TODAY - timedelta(days=1))
    assert unmet == {(scarce.id, TODAY): 2.0, (gone.id, TODAY): 1.0}

    # The patient then takes the one that is there; once it is packed (a sale) only the
    # other unit of that need is unmet.
    placed = _order(client, shop, [(scarce, 1)])
    assert placed.status_code == 201
    since = TODAY - timedelta(days=1)
    assert forecasting.unmet_demand(db.session, pharmacy_id, since=since) == {
        (scarce.id, TODAY): 2.0, (gone.id, TODAY): 1.0}  # not sold yet
    _packed(db, placed.get_json()["id"])
    assert forecasting.unmet_demand(db.session, pharmacy_id, since=since) == {
        (scarce.id, TODAY): 1.0, (gone.id, TODAY): 1.0}
    demand: dict[tuple[str, date], float] = {}
    for r in forecasting.demand_history(db.session, pharmacy_id, since=since):
        demand[r["unique_id"], r["ds"]] = demand.get((r["unique_id"], r["ds"]), 0) + r["y"]
    assert demand == {(str(scarce.id), TODAY): 2.0, (str(gone.id), TODAY): 1.0}
    assert forecasting.unmet_demand(db.session, pharmacy_id, since=TODAY + timedelta(days=1)) == {}


def _packed(db, order_id: int) -> None:  # type: ignore[no-untyped-def]
    db.session.expire_all()
    order = db.session.get(Order, order_id)
    order.status = OrderStatus.PACKED
    for line in order.lines:
        line.quantity_supplied = line.quantity
    db.session.commit()


def test_one_need_retried_over_days_is_counted_once_and_a_met_need_ends_it(db, shop) -> None:  # type: ignore[no-untyped-def]
    pharmacy, medicine = shop["pharmacy"], shop["gone"]
    first, other = shop["patient"], PatientFactory()
    start = datetime.combine(TODAY - timedelta(days=30), datetime.min.time(), tzinfo=UTC)

    def refused(patient, days: float, quantity: int = 56) -> None:  # type: ignore[no-untyped-def]
        db.session.add(LostDemand(pharmacy_id=pharmacy.id, medicine_id=medicine.id,
                                  patient_id=patient.id if patient else None,
                                  quantity=quantity, available=0,
                                  occurred_at=start + timedelta(days=days)))

    def bought(patient, days: float, quantity: int) -> None:  # type: ignore[no-untyped-def]
        order = Order(reference=f"B{days}", patient_id=patient.id, pharmacy_id=pharmacy.id,
                      status=OrderStatus.DELIVERED, placed_at=start + timedelta(days=days))
        order.lines.append(OrderLine(medicine_id=medicine.id, quantity=quantity,
                                     quantity_supplied=quantity, unit_price_minor=0,
                                     line_total_minor=0))
        db.session.add(order)

    # One patient tries on day 0 (twice), just after midnight, and on days 2 and 5, then
    # buys the 56 on day 6: one need, met; nothing is unmet.
    for day in (0.5, 0.6, 1.01, 2, 5):
        refused(first, day)
    bought(first, 6, 56)
    # A new need of the same patient on day 8 (after the first was met), never met.
    refused(first, 8, 28)
    # Another patient on day 3: their own need; after a 10-day pause, another one.
    refused(other, 3, 10)
    refused(other, 13, 10)
    # Two refusals with no patient on record are two needs.
    refused(None, 20, 1)
    refused(None, 20.1, 1)
    db.session.commit()
    unmet = forecasting.unmet_demand(db.session, pharmacy.id, since=start.date())
    day = start.date()
    assert unmet == {(medicine.id, day + timedelta(days=8)): 28.0,
                     (medicine.id, day + timedelta(days=3)): 10.0,
                     (medicine.id, day + timedelta(days=13)): 10.0,
                     (medicine.id, day + timedelta(days=20)): 2.0}


def test_demand_lost_while_out_of_stock_raises_the_forecast(db, shop) -> None:  # type: ignore[no-untyped-def]
    """A medicine that sold 4 a day and then ran out: from sales alone the forecast sees
    demand collapse; with the refusals (four patients a day) it keeps expecting about 4."""
    from tests.pharmacy.test_reorders import _history

    pharmacy, medicine = shop["pharmacy"], shop["gone"]
    _history(db, pharmacy, medicine, daily=4.0, days=120)
    db.session.flush()
    # The last 14 days: nothing sold (the shelf was empty), four patients refused daily.
    db.session.execute(Order.__table__.delete().where(
        Order.placed_at >= datetime.combine(TODAY - timedelta(days=14), datetime.min.time(),
                                            tzinfo=UTC)))
    for n in range(14):
        when = datetime.combine(TODAY - timedelta(days=14 - n), datetime.min.time(),
                                tzinfo=UTC) + timedelta(hours=10)
        for patient in [PatientFactory() for _ in range(4)]:
            db.session.add(LostDemand(pharmacy_id=pharmacy.id, medicine_id=medicine.id,
                                      patient_id=patient.id, quantity=1, available=0,
                                      occurred_at=when))
    db.session.commit()
    since = TODAY - timedelta(days=200)
    settings = forecasting.PolicySettings()
    stock = forecasting.stock_inputs(db.session, pharmacy.id, [medicine.id])

    def forecast(rows):  # type: ignore[no-untyped-def]
        (suggestion,) = forecasting.compute_suggestions(rows, stock, settings=settings,
                                                        today=TODAY)
        return suggestion.mean_protection / (settings.lead_time_days + settings.review_days)

    from_sales = forecast(forecasting.sales_history(db.session, pharmacy.id, since=since))
    from_demand = forecast(forecasting.demand_history(db.session, pharmacy.id, since=since))
    assert from_sales < 2.0
    assert 3.0 < from_demand < 5.0


def test_a_refused_basket_on_the_pages_is_kept_and_shown_on_the_reorders_page(  # type: ignore[no-untyped-def]
        client, db, shop) -> None:
    safe = {key: answer for key, _, answer in SAFETY_QUESTIONS}
    web_login(client, shop["user"].email, DEFAULT_PASSWORD)
    token = csrf_token(client, "/patient/shop")
    for medicine in (shop["gone"], shop["plenty"]):
        added = client.post("/patient/basket", data={
            "csrf_token": token, "key": f"otc:{medicine.id}", "quantity": "1", **safe})
        assert added.status_code == 302
    page = client.post("/patient/checkout", data={
        "csrf_token": csrf_token(client, "/patient/basket"),
        "address_id": str(shop["address"].id), "slot_id": str(shop["slot"].id)},
        follow_redirects=True)
    assert page.status_code == 200
    assert f"Not enough {shop['gone'].name} in stock" in page.get_data(as_text=True)
    assert shop["plenty"].name in page.get_data(as_text=True)  # the basket is kept
    db.session.expire_all()
    (row,) = db.session.scalars(select(LostDemand)).all()
    assert (row.medicine_id, row.quantity, row.available) == (shop["gone"].id, 1, 0)

    client.post("/logout", data={"csrf_token": csrf_token(client, "/patient/")})
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    reorders = client.get("/pharmacist/reorders").get_data(as_text=True)
    section = reorders.split("Refused for lack of stock", 1)[1].split("</section>", 1)[0]
    assert shop["gone"].name in section
    assert "<td>1</td><td>1</td>" in section  # one unmet unit, one refused checkout


def test_a_refusal_that_cannot_be_kept_is_still_a_clear_409(  # type: ignore[no-untyped-def]
        client, db, shop, monkeypatch) -> None:
    from pharmacy.services import orders

    real = orders.Shortage
    # A row the database refuses (quantity must be positive): keeping it fails.
    monkeypatch.setattr(orders, "Shortage", lambda m, requested, available: real(m, 0, 0))
    refused = _order(client, shop, [(shop["gone"], 1)])
    assert refused.status_code == 409 and refused.get_json()["code"] == "out_of_stock"
    assert db.session.scalars(select(LostDemand)).all() == []
    assert _order(client, shop, [(shop["plenty"], 1)]).status_code == 201  # session is fine
