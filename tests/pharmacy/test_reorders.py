"""Forecast-driven reorder suggestions, purchase orders and expiry risk, on PostgreSQL."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select

from pharmacy.models import (
    Order,
    OrderLine,
    OrderStatus,
    PurchaseOrder,
    ReorderSuggestion,
    Role,
    StockBatch,
    SuggestionStatus,
)
from pharmacy.services import forecasting
from tests.factories import (
    DEFAULT_PASSWORD,
    MedicineFactory,
    PatientFactory,
    PharmacyFactory,
    UserFactory,
)
from tests.pharmacy.helpers import csrf_token, web_login

TODAY = datetime.now(UTC).date()


def _history(db, pharmacy, medicine, daily: float, days: int = 120, seed: int = 1) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    patient = PatientFactory()
    for n in range(days):
        day = TODAY - timedelta(days=days - n)
        units = sum(1 for _ in range(int(daily * 3)) if rng.random() < 1 / 3)
        if units == 0:
            continue
        when = datetime.combine(day, time(11), tzinfo=UTC)
        order = Order(reference=f"H{medicine.id}{n:04d}", patient_id=patient.id,
                      pharmacy_id=pharmacy.id, status=OrderStatus.DELIVERED, placed_at=when)
        order.lines.append(OrderLine(medicine_id=medicine.id, quantity=units,
                                     unit_price_minor=0, line_total_minor=0))
        db.session.add(order)


def test_nightly_refresh_suggests_whole_packs_and_accepting_drafts_an_order(client, db) -> None:  # type: ignore[no-untyped-def]
    pharmacy = PharmacyFactory()
    busy = MedicineFactory(name="Busy 10mg tablets", pack_size=28)
    idle = MedicineFactory(name="Idle 5mg tablets", pack_size=30)
    _history(db, pharmacy, busy, daily=6)
    _history(db, pharmacy, idle, daily=0.5, seed=2)
    db.session.add(StockBatch(pharmacy_id=pharmacy.id, medicine=busy, lot_number="B1",
                              expiry_date=TODAY + timedelta(days=365), quantity_on_hand=20,
                              received_at=datetime.now(UTC) - timedelta(days=5)))
    db.session.add(StockBatch(pharmacy_id=pharmacy.id, medicine=idle, lot_number="I1",
                              expiry_date=TODAY + timedelta(days=40), quantity_on_hand=500,
                              received_at=datetime.now(UTC) - timedelta(days=300)))
    # Never sold, so never forecast: dead stock, listed when it expires within a year.
    dead = MedicineFactory(name="Dead 1mg tablets", pack_size=30)
    for lot, days in (("D1", 200), ("D2", 800)):
        db.session.add(StockBatch(pharmacy_id=pharmacy.id, medicine=dead, lot_number=lot,
                                  expiry_date=TODAY + timedelta(days=days), quantity_on_hand=30,
                                  received_at=datetime.now(UTC) - timedelta(days=30)))
    db.session.commit()

    stored = forecasting.refresh_suggestions(db.session, pharmacy.id,
                                             settings=forecasting.PolicySettings())
    db.session.commit()
    assert stored == 2
    by_medicine = {s.medicine_id: s for s in forecasting.open_suggestions(db.session,
                                                                          pharmacy.id)}
    busy_s, idle_s = by_medicine[busy.id], by_medicine[idle.id]
    # About 6 a day over 9 days of protection, 20 in stock: order whole packs of 28.
    assert 30 < busy_s.mean_protection < 80
    assert busy_s.suggested_quantity > 0 and busy_s.suggested_quantity % 28 == 0
    assert busy_s.order_up_to >= busy_s.mean_protection
    assert idle_s.suggested_quantity == 0  # 500 in stock
    # The idle medicine's batch cannot sell before it expires.
    risks = forecasting.expiry_risk(db.session, pharmacy.id, today=TODAY)
    assert [r.batch.lot_number for r in risks] == ["I1", "D1"]
    assert risks[0].at_risk_units > 400
    assert (risks[1].expected_sales, risks[1].at_risk_units) == (0.0, 30)

    # A rerun supersedes, never duplicates, the open suggestions.
    forecasting.refresh_suggestions(db.session, pharmacy.id,
                                    settings=forecasting.PolicySettings())
    db.session.commit()
    assert len(forecasting.open_suggestions(db.session, pharmacy.id)) == 2
    assert db.session.scalar(select(ReorderSuggestion).where(
        ReorderSuggestion.status == SuggestionStatus.SUPERSEDED)) is not None

    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    page = client.get("/pharmacist/reorders").get_data(as_text=True)
    assert "<svg" in page and "Busy 10mg tablets" in page and "I1" in page
    suggestion_ids = re.findall(r'name="suggestion" value="(\d+)" checked', page)
    response = client.post("/pharmacist/reorders", data={
        "csrf_token": csrf_token(client, "/pharmacist/reorders"), "supplier": "AAH",
        "suggestion": suggestion_ids})
    assert response.status_code == 302
    order = db.session.scalar(select(PurchaseOrder))
    assert [(line.medicine_id, line.quantity) for line in order.lines] == [
        (busy.id, by_medicine[busy.id].suggested_quantity)]
    # The drafted order now counts as stock on order for the next run.
    inputs = forecasting.stock_inputs(db.session, pharmacy.id, [busy.id])
    assert inputs[busy.id].on_order == by_medicine[busy.id].suggested_quantity
    # Accepting a suggestion does not make its medicine's stock sell faster.
    for suggestion in db.session.scalars(select(ReorderSuggestion).where(
            ReorderSuggestion.medicine_id == idle.id)):
        suggestion.status = SuggestionStatus.DISMISSED
    db.session.commit()
    assert forecasting.open_suggestions(db.session, pharmacy.id) == []
    assert [r.batch.lot_number for r in forecasting.expiry_risk(
        db.session, pharmacy.id, today=TODAY)] == ["I1", "D1"]


def test_chart_svg_has_history_forecast_and_bands() -> None:
    chart = {"history": [["2026-11-01", 3.0], ["2026-11-02", 5.0]],
             "forecast": [["2026-11-03", 4.0, 2.0, 6.0, 1.0, 8.0],
                          ["2026-11-04", 4.0, 2.0, 6.0, 1.0, 8.0]]}
    svg = forecasting.chart_svg(chart)
    assert svg.startswith("<svg") and svg.count("<polygon") == 2 and svg.count("<polyline") == 2
    assert date.today() is not None


def test_the_nightly_job_refreshes_every_pharmacy(db) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.jobs.forecasts import refresh_reorder_suggestions

    pharmacy = PharmacyFactory()
    _history(db, pharmacy, MedicineFactory(pack_size=28), daily=4)
    db.session.commit()
    assert refresh_reorder_suggestions() == 1
    assert refresh_reorder_suggestions() == 1
    assert len(forecasting.open_suggestions(db.session, pharmacy.id)) == 1


def test_an_order_is_capped_at_what_sells_before_the_last_deliverys_shelf_life_runs_out(  # type: ignore[no-untyped-def]
        db) -> None:
    from pharmacy.models import BatchStatus

    pharmacy = PharmacyFactory()
    short = MedicineFactory(name="Short-dated 5ml oral solution", pack_size=5)
    _history(db, pharmacy, short, daily=6)
    # The last delivery had 5 days of shelf life; it is out of use now, so nothing is on
    # hand, yet it still says what the next one will bring.
    db.session.add(StockBatch(pharmacy_id=pharmacy.id, medicine=short, lot_number="S1",
                              expiry_date=TODAY + timedelta(days=2), quantity_on_hand=0,
                              status=BatchStatus.QUARANTINED,
                              received_at=datetime.now(UTC) - timedelta(days=3)))
    db.session.commit()
    inputs = forecasting.stock_inputs(db.session, pharmacy.id, [short.id])[short.id]
    assert (inputs.on_hand, inputs.shelf_life_days) == (0, 5)
    forecasting.refresh_suggestions(db.session, pharmacy.id,
                                    settings=forecasting.PolicySettings())
    db.session.commit()
    suggestion = forecasting.open_suggestions(db.session, pharmacy.id)[0]
    # About 6 a day: the order-up-to level covers 9 days and more (~60 units), but only
    # about 5 days' demand (~30) sells before a new batch would expire.
    assert suggestion.order_up_to > 50
    assert 0 < suggestion.suggested_quantity <= 40
    assert suggestion.suggested_quantity % 5 == 0


def test_a_medicines_service_level_and_minimum_order_shape_its_suggestion() -> None:
    rng = random.Random(4)
    history = [{"unique_id": "7", "ds": TODAY - timedelta(days=120 - n),
                "y": float(sum(rng.random() < 0.5 for _ in range(12)))} for n in range(120)]

    def suggest(level: float | None, moq: int | None) -> forecasting.Suggestion:
        stock = {7: forecasting.StockInputs(7, 10, 40, 0, 0, None, level, moq)}
        return forecasting.compute_suggestions(
            history, stock, settings=forecasting.PolicySettings(), today=TODAY)[0]

    default, higher = suggest(None, None), suggest(0.995, None)
    assert higher.order_up_to > default.order_up_to  # more safety stock
    assert default.quantity % 10 == 0 and 0 < default.quantity < 500
    assert suggest(None, 500).quantity == 500  # at least the supplier's minimum


def test_reorder_settings_are_set_on_the_reorders_page(client, db) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.models import AuditEvent

    pharmacy = PharmacyFactory()
    medicine = MedicineFactory(name="Busy 10mg tablets", pack_size=28)
    _history(db, pharmacy, medicine, daily=6)
    db.session.commit()
    forecasting.refresh_suggestions(db.session, pharmacy.id,
                                    settings=forecasting.PolicySettings())
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    page = client.get("/pharmacist/reorders").get_data(as_text=True)
    assert f'form="settings-{medicine.id}" name="service_level"' in page
    url = f"/pharmacist/medicines/{medicine.id}/reorder-settings"
    token = csrf_token(client, "/pharmacist/reorders")
    for level, minimum, message in (("99.99", "", "percentage from 50 to 99.9"),
                                     ("40", "", "percentage from 50 to 99.9"),
                                     ("٩٥", "", "percentage from 50 to 99.9"),
                                     ("", "0", "The minimum order must be a whole number")):
        refused = client.post(url, data={"csrf_token": token, "service_level": level,
                                         "minimum_order_quantity": minimum})
        assert refused.status_code == 422
        assert message in refused.get_data(as_text=True)
    saved = client.post(url, data={"csrf_token": token, "service_level": "98.5%",
                                   "minimum_order_quantity": "56"})
    assert saved.status_code == 302
    db.session.refresh(medicine)
    assert (medicine.reorder_service_level, medicine.minimum_order_quantity) == (0.985, 56)
    assert 'value="98.5"' in client.get("/pharmacist/reorders").get_data(as_text=True)
    inputs = forecasting.stock_inputs(db.session, pharmacy.id, [medicine.id])[medicine.id]
    assert (inputs.service_level, inputs.minimum_order_quantity) == (0.985, 56)
    cleared = client.post(url, data={"csrf_token": token, "service_level": "",
                                     "minimum_order_quantity": ""})
    assert cleared.status_code == 302
    db.session.refresh(medicine)
    assert (medicine.reorder_service_level, medicine.minimum_order_quantity) == (None, None)
    assert len(db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "medicine.reorder_settings_changed")).all()) == 2
    assert client.post("/pharmacist/medicines/999999/reorder-settings",
                       data={"csrf_token": token}).status_code == 404
