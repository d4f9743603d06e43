"""Checkouts refused for lack of stock are kept as lost demand and counted back into the
demand the forecast learns from (on PostgreSQL, through the API and the pages)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from pharmacy.models import (
    LostDemand,
    Order,
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

    # The patient then takes the one that is there: only the other is unmet.
    assert _order(client, shop, [(scarce, 1)]).status_code == 201
    unmet = forecasting.unmet_demand(db.session, pharmacy_id, since=TODAY - timedelta(days=1))
    assert unmet == {(scarce.id, TODAY): 1.0, (gone.id, TODAY): 1.0}
    history = forecasting.demand_history(db.session, pharmacy_id,
                                         since=TODAY - timedelta(days=1))
    assert {(r["unique_id"], r["ds"], r["y"]) for r in history} == {
        (str(scarce.id), TODAY, 1.0), (str(gone.id), TODAY, 1.0)}
    assert forecasting.unmet_demand(db.session, pharmacy_id, since=TODAY + timedelta(days=1)) == {}


def test_demand_lost_while_out_of_stock_raises_the_forecast(db, shop) -> None:  # type: ignore[no-untyped-def]
    """A medicine that sold 4 a day and then ran out: from sales alone the forecast sees
    demand collapse; with the refusals it keeps expecting about 4 a day."""
    from tests.pharmacy.test_reorders import _history

    pharmacy, medicine = shop["pharmacy"], shop["gone"]
    _history(db, pharmacy, medicine, daily=4.0, days=120)
    db.session.flush()
    # The last 14 days: nothing sold (the shelf was empty), four patients refused daily.
    db.session.execute(Order.__table__.delete().where(
        Order.placed_at >= datetime.combine(TODAY - timedelta(days=14), datetime.min.time(),
                                            tzinfo=UTC)))
    patients = [PatientFactory() for _ in range(4)]
    for n in range(14):
        when = datetime.combine(TODAY - timedelta(days=14 - n), datetime.min.time(),
                                tzinfo=UTC) + timedelta(hours=10)
        for patient in patients:
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
