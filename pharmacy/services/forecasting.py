"""Demand forecasts and reorder suggestions: the one place that turns rows into the
``inventory`` library's frames and back.

The nightly job reads sales and stock, ends its transaction, runs the forecast (seconds to
minutes, no connection held), then writes suggestions in a new transaction, marking the
previous open ones superseded.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..errors import InvalidRequest
from ..models import (
    BatchStatus,
    LostDemand,
    Medicine,
    Order,
    OrderLine,
    OrderStatus,
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderStatus,
    ReorderSuggestion,
    StockBatch,
    SuggestionStatus,
    User,
)
from ..models.base import utcnow
from . import audit

logger = logging.getLogger(__name__)

SOLD = (OrderStatus.PACKED, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED,
        OrderStatus.FAILED, OrderStatus.RETURNED)


@dataclass(frozen=True)
class PolicySettings:
    lead_time_days: int = 2        # wholesalers deliver next day or the day after
    review_days: int = 7           # suggestions are reviewed weekly
    service_level: float = 0.95
    history_days: int = 365
    min_history_days: int = 28


@dataclass(frozen=True)
class StockInputs:
    """What the policy needs of one medicine, read in one short transaction."""

    medicine_id: int
    pack_size: int
    on_hand: int           # usable stock (available batches)
    reserved: int
    on_order: int          # open purchase orders
    shelf_life_days: int | None
    service_level: float | None = None       # the medicine's own; None: the pharmacy's
    minimum_order_quantity: int | None = None


def sales_history(session: Session, pharmacy_id: int, *, since: date) -> list[dict[str, Any]]:
    """Units sold per medicine per day (long format rows: unique_id, ds, y)."""
    day = func.date(Order.placed_at)
    rows = session.execute(
        select(OrderLine.medicine_id, day.label("ds"),
               func.sum(func.coalesce(OrderLine.quantity_supplied, OrderLine.quantity)))
        .join(Order, Order.id == OrderLine.order_id)
        .where(Order.pharmacy_id == pharmacy_id, Order.status.in_(SOLD),
               Order.recalled_at.is_(None),  # withdrawn by the pharmacist: not a need met
               Order.placed_at >= datetime.combine(since, datetime.min.time(), tzinfo=UTC))
        .group_by(OrderLine.medicine_id, day)).all()
    out = []
    for medicine_id, ds, units in rows:
        out.append({"unique_id": str(medicine_id), "ds": _as_date(ds), "y": float(units or 0)})
    return out


# Refusals of one patient for one medicine this close together are one unmet need (a
# retried checkout, a try again tomorrow), counted once at the first refusal.
NEED_EPISODE = timedelta(days=7)


def unmet_demand(session: Session, pharmacy_id: int, *,
                 since: date) -> dict[tuple[int, date], float]:
    """Units refused for lack of stock per (medicine, UTC day of the first refusal).

    One patient's refusals of one medicine, each within ``NEED_EPISODE`` of the one
    before, are one need: the most they asked for, less what they then bought of it (an
    order packed or further, placed from the first refusal until the episode ends). A
    refusal without a patient on record stands alone.
    """
    start = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
    refusals = session.execute(
        select(LostDemand.id, LostDemand.patient_id, LostDemand.medicine_id,
               LostDemand.occurred_at, LostDemand.quantity)
        .where(LostDemand.pharmacy_id == pharmacy_id, LostDemand.occurred_at >= start)
        .order_by(LostDemand.occurred_at, LostDemand.id)).all()
    if not refusals:
        return {}
    bought: dict[tuple[int, int], list[tuple[datetime, float]]] = defaultdict(list)
    for patient_id, medicine_id, placed_at, units in session.execute(
            select(Order.patient_id, OrderLine.medicine_id, Order.placed_at,
                   func.coalesce(OrderLine.quantity_supplied, OrderLine.quantity))
            .join(Order, Order.id == OrderLine.order_id)
            .where(Order.pharmacy_id == pharmacy_id, Order.placed_at >= start,
                   Order.status.in_(SOLD), Order.recalled_at.is_(None),
                   OrderLine.medicine_id.in_(sorted({r.medicine_id for r in refusals})))
            .order_by(Order.placed_at)):
        bought[patient_id, medicine_id].append((placed_at, float(units or 0)))
    episodes: dict[tuple[Any, int], list[Any]] = {}  # key -> [first, last, wanted]
    out: dict[tuple[int, date], float] = defaultdict(float)

    def close(key: tuple[Any, int], episode: list[Any]) -> None:
        first, last, wanted = episode
        patient_id, medicine_id = key
        got = _bought_between(bought.get((patient_id, medicine_id), ()), first,
                              last + NEED_EPISODE)
        if wanted > got:
            out[medicine_id, first.date()] += wanted - got

    for row in refusals:
        at = row.occurred_at  # aware UTC (UTCDateTime)
        key = (row.patient_id if row.patient_id is not None else ("row", row.id),
               row.medicine_id)
        episode = episodes.get(key)
        if episode is not None and (at - episode[1] > NEED_EPISODE or _bought_between(
                bought.get((row.patient_id, row.medicine_id), ()), episode[0], at)
                >= episode[2]):
            close(key, episode)  # a pause, or the need was met: this is a new need
            episode = None
        if episode is None:
            episodes[key] = [at, at, float(row.quantity)]
        else:
            episode[1] = at
            episode[2] = max(episode[2], float(row.quantity))
    for key, episode in episodes.items():
        close(key, episode)
    return dict(out)


def _bought_between(purchases: Sequence[tuple[datetime, float]], first: datetime,
                    last: datetime) -> float:
    return sum(units for at, units in purchases if first <= at <= last)


def demand_history(session: Session, pharmacy_id: int, *, since: date) -> list[dict[str, Any]]:
    """Sales plus unmet demand per medicine per day: what the forecast learns from, so that
    a stock-out does not look like demand stopping."""
    rows = sales_history(session, pharmacy_id, since=since)
    for (medicine_id, ds), units in sorted(unmet_demand(session, pharmacy_id,
                                                         since=since).items()):
        rows.append({"unique_id": str(medicine_id), "ds": ds, "y": units})
    return rows


@dataclass(frozen=True)
class LostDemandSummary:
    medicine: Medicine
    unmet_units: float      # counted as the forecast counts them
    refusals: int           # refused checkouts, retries included
    last_at: datetime


def recent_lost_demand(session: Session, pharmacy_id: int, *, today: date,
                       days: int = 28) -> list[LostDemandSummary]:
    """Medicines patients could not have for lack of stock in the last ``days``, most
    units first (for the reorders page)."""
    since = today - timedelta(days=days - 1)
    unmet: dict[int, float] = defaultdict(float)
    for (medicine_id, _), units in unmet_demand(session, pharmacy_id, since=since).items():
        unmet[medicine_id] += units
    rows = session.execute(
        select(LostDemand.medicine_id, func.count(), func.max(LostDemand.occurred_at))
        .where(LostDemand.pharmacy_id == pharmacy_id,
               LostDemand.occurred_at >= datetime.combine(since, datetime.min.time(),
                                                          tzinfo=UTC))
        .group_by(LostDemand.medicine_id)).all()
    medicines = {m.id: m for m in session.scalars(
        select(Medicine).where(Medicine.id.in_([r[0] for r in rows])))}
    out = [LostDemandSummary(medicines[m], unmet.get(m, 0.0), int(n), last)
           for m, n, last in rows]
    return sorted(out, key=lambda s: (-s.unmet_units, -s.refusals, s.medicine.name))


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def stock_inputs(session: Session, pharmacy_id: int,
                 medicine_ids: Sequence[int]) -> dict[int, StockInputs]:
    batches = session.execute(
        select(StockBatch.medicine_id, func.sum(StockBatch.quantity_on_hand),
               func.sum(StockBatch.quantity_reserved))
        .where(StockBatch.pharmacy_id == pharmacy_id, StockBatch.medicine_id.in_(medicine_ids),
               StockBatch.status == BatchStatus.AVAILABLE)
        .group_by(StockBatch.medicine_id)).all()
    life = _shelf_life_days(session, pharmacy_id, medicine_ids)
    by_medicine = {m: (int(on or 0), int(res or 0)) for m, on, res in batches}
    on_order = {int(m): int(q or 0) for m, q in session.execute(
        select(PurchaseOrderLine.medicine_id,
               func.sum(PurchaseOrderLine.quantity - PurchaseOrderLine.quantity_received))
        .join(PurchaseOrder).where(PurchaseOrder.pharmacy_id == pharmacy_id,
                                   PurchaseOrder.status.in_([PurchaseOrderStatus.DRAFT,
                                                             PurchaseOrderStatus.SENT]))
        .group_by(PurchaseOrderLine.medicine_id))}
    policy = {m: (pack, level, moq) for m, pack, level, moq in session.execute(
        select(Medicine.id, Medicine.pack_size, Medicine.reorder_service_level,
               Medicine.minimum_order_quantity).where(Medicine.id.in_(medicine_ids))).all()}
    out = {}
    for medicine_id in medicine_ids:
        on_hand, reserved = by_medicine.get(medicine_id, (0, 0))
        pack, level, moq = policy.get(medicine_id, (None, None, None))
        out[medicine_id] = StockInputs(medicine_id, int(pack or 1), on_hand, reserved,
                                       int(on_order.get(medicine_id) or 0),
                                       life.get(medicine_id), level, moq)
    return out


def _shelf_life_days(session: Session, pharmacy_id: int,
                     medicine_ids: Sequence[int]) -> dict[int, int]:
    """Days from receipt to expiry of each medicine's most recent delivery (any status: the
    stock may be sold out, quarantined or gone): what the next delivery is likely to have,
    which caps an order at what can be sold before it expires."""
    rows = session.execute(
        select(StockBatch.medicine_id, StockBatch.expiry_date, StockBatch.received_at)
        .where(StockBatch.pharmacy_id == pharmacy_id, StockBatch.medicine_id.in_(medicine_ids))
        .order_by(StockBatch.medicine_id, StockBatch.received_at, StockBatch.id)).all()
    out: dict[int, int] = {}
    for medicine_id, expiry, received in rows:  # the last row per medicine wins
        out[medicine_id] = max(0, (expiry - received.date()).days)
    return out


@dataclass(frozen=True)
class Suggestion:
    medicine_id: int
    demand_class: str | None
    mean_protection: float
    sigma_protection: float
    order_up_to: int
    inventory_position: int
    quantity: int
    chart: dict[str, Any]


def compute_suggestions(history: list[dict[str, Any]], stock: dict[int, StockInputs], *,
                        settings: PolicySettings, today: date) -> list[Suggestion]:
    """Forecast each medicine's daily demand and turn it into an order-up-to suggestion.

    Pure computation (no database): the forecast's 80% band gives the protection-period
    sigma; S = mean + z * sigma at the medicine's service level (the pharmacy's when it
    has none); the order is whole packs, at least the medicine's minimum order quantity,
    capped at what can be sold before a new batch would expire (by the shelf life of the
    last delivery); an order that would have to be below the minimum to avoid waste is
    not made.
    """
    import pandas as pd

    from inventory import classify_demand, forecast_demand
    from inventory.policy import (
        order_quantity,
        order_up_to_level,
        protection_demand,
        safety_factor,
    )

    if not history:
        return []
    frame = pd.DataFrame(history)
    frame["ds"] = pd.to_datetime(frame["ds"])
    # Every series runs to today: days without sales are zero demand, not missing data.
    ends = frame.groupby("unique_id")["ds"].max()
    pad = [{"unique_id": uid, "ds": pd.Timestamp(today), "y": 0.0}
           for uid, last in ends.items() if last < pd.Timestamp(today)]
    if pad:
        frame = pd.concat([frame, pd.DataFrame(pad)], ignore_index=True)
    frame = frame.groupby(["unique_id", "ds"])["y"].sum().reset_index()
    spans = frame.groupby("unique_id")["ds"].agg(lambda s: (s.max() - s.min()).days + 1)
    keep = spans[spans >= settings.min_history_days].index
    frame = frame[frame["unique_id"].isin(keep)]
    if frame.empty:
        return []
    periods = settings.lead_time_days + settings.review_days
    longest_life = max((s.shelf_life_days or 0) for s in stock.values()) or 0
    horizon = max(periods, min(longest_life, 180), 28)
    forecast = forecast_demand(frame, horizon=horizon, freq="D", n_jobs=1)
    classes = classify_demand(frame).set_index("unique_id")["demand_class"]
    protection = protection_demand(forecast, lead_time=settings.lead_time_days,
                                   review_period=settings.review_days).set_index("unique_id")
    out = []
    for uid, row in protection.iterrows():
        medicine_id = int(str(uid))
        inputs = stock.get(medicine_id)
        if inputs is None:
            continue
        series = forecast[forecast["unique_id"] == uid].sort_values("ds")
        position = inputs.on_hand - inputs.reserved + inputs.on_order
        z = safety_factor(inputs.service_level or settings.service_level)
        level = order_up_to_level(float(row["mean"]), float(row["sigma"]), z)
        max_sellable = None
        if inputs.shelf_life_days:
            # A new batch arrives after the lead time and must sell before it expires.
            window = series["forecast"].iloc[
                settings.lead_time_days:settings.lead_time_days + inputs.shelf_life_days]
            max_sellable = float(window.sum()) - max(0, position)
        quantity = order_quantity(level, position, pack_size=inputs.pack_size,
                                  min_order_qty=inputs.minimum_order_quantity or 0,
                                  max_sellable=max_sellable)
        past = frame[frame["unique_id"] == uid].sort_values("ds").tail(90)
        chart = {
            "history": [[d.date().isoformat(), float(y)] for d, y in zip(past["ds"], past["y"],
                                                                          strict=True)],
            "forecast": [[d.date().isoformat(), float(f), float(lo80), float(hi80),
                          float(lo95), float(hi95)] for d, f, lo80, hi80, lo95, hi95 in zip(
                series["ds"], series["forecast"], series["lo_80"], series["hi_80"],
                series["lo_95"], series["hi_95"], strict=True)][:periods * 3],
        }
        out.append(Suggestion(medicine_id, str(classes.get(uid)) if uid in classes else None,
                              float(row["mean"]), float(row["sigma"]), int(math.ceil(level)),
                              int(position), int(quantity), chart))
    return out


def refresh_suggestions(session: Session, pharmacy_id: int, *, settings: PolicySettings,
                        now: datetime | None = None) -> int:
    """Read, compute (no transaction held), write. Returns how many suggestions were stored."""
    now = now or utcnow()
    today = now.date()
    history = demand_history(session, pharmacy_id,
                             since=today - timedelta(days=settings.history_days))
    medicine_ids = sorted({int(r["unique_id"]) for r in history})
    stock = stock_inputs(session, pharmacy_id, medicine_ids)
    session.rollback()  # end the read transaction before the long computation
    suggestions = compute_suggestions(history, stock, settings=settings, today=today)
    session.execute(
        update(ReorderSuggestion)
        .where(ReorderSuggestion.pharmacy_id == pharmacy_id,
               ReorderSuggestion.status == SuggestionStatus.OPEN)
        .values(status=SuggestionStatus.SUPERSEDED)
        .execution_options(synchronize_session=False))
    for s in suggestions:
        session.add(ReorderSuggestion(
            pharmacy_id=pharmacy_id, medicine_id=s.medicine_id, computed_at=utcnow(),
            inputs_as_of=now, demand_class=s.demand_class, mean_protection=s.mean_protection,
            sigma_protection=s.sigma_protection, order_up_to=s.order_up_to,
            inventory_position=s.inventory_position, suggested_quantity=s.quantity,
            chart=s.chart))
    session.flush()
    logger.info("stored %d reorder suggestions for pharmacy %s", len(suggestions), pharmacy_id)
    return len(suggestions)


def set_reorder_settings(session: Session, medicine: Medicine, *,
                         service_level: float | None, minimum_order_quantity: int | None,
                         actor: User) -> None:
    """A medicine's own service level (0.5-0.999) and minimum order (units), or None for
    the pharmacy's default and no minimum; used from the next refresh of suggestions."""
    if service_level is not None and not 0.5 <= service_level <= 0.999:
        raise InvalidRequest("The service level must be from 50% to 99.9%.")
    if minimum_order_quantity is not None and minimum_order_quantity <= 0:
        raise InvalidRequest("The minimum order must be at least one unit.")
    before = {"service_level": medicine.reorder_service_level,
              "minimum_order_quantity": medicine.minimum_order_quantity}
    after = {"service_level": service_level, "minimum_order_quantity": minimum_order_quantity}
    if before == after:
        return
    medicine.reorder_service_level = service_level
    medicine.minimum_order_quantity = minimum_order_quantity
    audit.record(session, action="medicine.reorder_settings_changed", entity_type="medicine",
                 entity_id=medicine.id, actor=actor, before=before, after=after)
    session.flush()


def open_suggestions(session: Session, pharmacy_id: int) -> list[ReorderSuggestion]:
    return list(session.scalars(
        select(ReorderSuggestion).where(ReorderSuggestion.pharmacy_id == pharmacy_id,
                                        ReorderSuggestion.status == SuggestionStatus.OPEN)
        .order_by(ReorderSuggestion.suggested_quantity.desc(), ReorderSuggestion.id)))


def accept_suggestions(session: Session, pharmacy_id: int, suggestion_ids: Sequence[int], *,
                       supplier: str, actor: User) -> PurchaseOrder:
    """Turn accepted suggestions into one draft purchase order."""
    chosen = list(session.scalars(
        select(ReorderSuggestion).where(ReorderSuggestion.id.in_(suggestion_ids),
                                        ReorderSuggestion.pharmacy_id == pharmacy_id,
                                        ReorderSuggestion.status == SuggestionStatus.OPEN)
        .with_for_update()))
    chosen = [s for s in chosen if s.suggested_quantity > 0]
    if not chosen:
        raise InvalidRequest("Choose at least one open suggestion with something to order.")
    order = PurchaseOrder(pharmacy_id=pharmacy_id, supplier=supplier.strip()[:200] or "Wholesaler",
                          reference="PO" + secrets.token_hex(5).upper(), created_by_id=actor.id)
    for s in chosen:
        order.lines.append(PurchaseOrderLine(medicine_id=s.medicine_id,
                                             quantity=s.suggested_quantity))
    session.add(order)
    session.flush()
    for s in chosen:
        s.status = SuggestionStatus.ACCEPTED
        s.purchase_order_id = order.id
    audit.record(session, action="purchase_order.created", entity_type="purchase_order",
                 entity_id=order.id, actor=actor,
                 after={"lines": len(order.lines), "suggestions": [s.id for s in chosen]})
    session.flush()
    return order


@dataclass(frozen=True)
class ExpiryRisk:
    batch: StockBatch
    expected_sales: float
    at_risk_units: int


#: Batches without any forecast demand are listed when they expire within this many days:
#: stock that nothing suggests will sell (no sales in the forecast's history).
DEAD_STOCK_HORIZON_DAYS = 365


def expiry_risk(session: Session, pharmacy_id: int, *, today: date) -> list[ExpiryRisk]:
    """Stock projected to expire before it sells, at the latest forecast's daily demand.

    Batches of a medicine sell first-expiry-first-out: each batch gets the demand left over
    by the batches that expire before it. The rate is the medicine's most recent forecast,
    whatever became of its suggestion (accepting one does not make the stock sell faster);
    a medicine with no forecast at all sells nothing, so its batches expiring within
    `DEAD_STOCK_HORIZON_DAYS` are wholly at risk.
    """
    latest = (select(func.max(ReorderSuggestion.id))
              .where(ReorderSuggestion.pharmacy_id == pharmacy_id)
              .group_by(ReorderSuggestion.medicine_id))
    rates: dict[int, float] = {}
    for s in session.scalars(select(ReorderSuggestion).where(ReorderSuggestion.id.in_(latest))):
        points = s.chart.get("forecast") or []
        rates[s.medicine_id] = sum(p[1] for p in points) / len(points) if points else 0.0
    batches = session.scalars(select(StockBatch).where(
        StockBatch.pharmacy_id == pharmacy_id, StockBatch.status == BatchStatus.AVAILABLE,
        StockBatch.quantity_on_hand > 0).order_by(StockBatch.medicine_id,
                                                   StockBatch.expiry_date, StockBatch.id))
    used: dict[int, float] = defaultdict(float)
    out = []
    for batch in batches:
        rate = rates.get(batch.medicine_id, 0.0)
        days = max(0, (batch.expiry_date - today).days)
        demand = max(0.0, rate * days - used[batch.medicine_id])
        sells = min(float(batch.quantity_on_hand), demand)
        used[batch.medicine_id] += sells
        left = int(batch.quantity_on_hand - math.floor(sells))
        if left > 0 and (batch.medicine_id in rates or days <= DEAD_STOCK_HORIZON_DAYS):
            out.append(ExpiryRisk(batch, sells, left))
    return sorted(out, key=lambda r: (r.batch.expiry_date, r.batch.id))


def chart_svg(chart: dict[str, Any], *, width: int = 480, height: int = 160) -> str:
    """A small SVG line chart: history, forecast and its 80% and 95% bands (no script)."""
    history = chart.get("history") or []
    forecast = chart.get("forecast") or []
    points = [p[1] for p in history] + [p[5] for p in forecast] + [1.0]
    top = max(points)
    n = max(1, len(history) + len(forecast) - 1)
    pad = 4

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * i / n

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * v / top

    def line(pairs: list[tuple[int, float]]) -> str:
        return " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in pairs)

    start = len(history)
    band95 = ([(start + i, p[5]) for i, p in enumerate(forecast)]
              + [(start + i, p[4]) for i, p in reversed(list(enumerate(forecast)))])
    band80 = ([(start + i, p[3]) for i, p in enumerate(forecast)]
              + [(start + i, p[2]) for i, p in reversed(list(enumerate(forecast)))])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" '
             f'aria-label="Daily demand: history and forecast with 80% and 95% bands">',
             f'<rect width="{width}" height="{height}" fill="#fff"/>']
    if forecast:
        parts.append(f'<polygon points="{line(band95)}" fill="#cfe0f5"/>')
        parts.append(f'<polygon points="{line(band80)}" fill="#9dbfe8"/>')
        mean = line([(start + i, p[1]) for i, p in enumerate(forecast)])
        parts.append(f'<polyline points="{mean}" fill="none" stroke="#005eb8" '
                     'stroke-width="2" stroke-dasharray="4 2"/>')
    if history:
        parts.append(f'<polyline points="{line([(i, p[1]) for i, p in enumerate(history)])}" '
                     'fill="none" stroke="#333" stroke-width="1.5"/>')
    parts.append("</svg>")
    return "".join(parts)
