"""``flask seed-demo`` on PostgreSQL: what it creates, that it is idempotent, demo log-ins."""

from __future__ import annotations

from sqlalchemy import func, select
from stdnum.gb import nhs

from pharmacy.models import (
    Courier,
    InteractionRule,
    Medicine,
    MedicineCodeHistory,
    Order,
    PatientProfile,
    Prescription,
    Role,
    StockBatch,
    StockMovement,
    User,
    Vehicle,
)
from pharmacy.services.demo import DEMO_ACCOUNTS
from tests.pharmacy.helpers import api_token, web_login


def _count(db, model) -> int:  # type: ignore[no-untyped-def]
    return int(db.session.scalar(select(func.count()).select_from(model)))


def test_seed_demo_creates_the_demo_pharmacy_and_is_idempotent(runner, db, client) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    assert "Seeded demo data" in result.output
    counts = {m: _count(db, m) for m in (Medicine, MedicineCodeHistory, InteractionRule,
                                         PatientProfile, Prescription, Order, StockBatch,
                                         StockMovement, Courier, Vehicle, User)}
    assert counts[Medicine] == 122
    assert counts[InteractionRule] > 100
    assert counts[PatientProfile] == 200
    assert counts[Courier] == 5
    assert counts[Vehicle] == 5
    assert _count(db, select(Vehicle).where(Vehicle.has_fridge.is_(True)).subquery()) == 2
    assert _count(db, select(User).where(User.role == Role.PHARMACIST).subquery()) == 3
    assert counts[Order] > 300  # about three months of history
    assert counts[StockMovement] >= counts[StockBatch]
    # Every seeded NHS number passes the modulus-11 check.
    assert all(nhs.is_valid(n) for n in db.session.scalars(select(PatientProfile.nhs_number)))
    # Every patient has a geocoded address near the depot.
    patients = db.session.scalars(select(PatientProfile)).all()
    assert all(p.addresses and abs(p.addresses[0].latitude - 53.8) < 0.1 for p in patients)
    # Stock has varied expiry: some past, some near, most long-dated.
    expiries = db.session.scalars(select(StockBatch.status)).all()
    assert {"available", "expired"} <= {s.value for s in expiries}

    again = runner.invoke(args=["seed-demo"])
    assert again.exit_code == 0, again.output
    assert "already present" in again.output
    assert {m: _count(db, m) for m in counts} == counts

    for role, (email, password, _) in DEMO_ACCOUNTS.items():
        assert api_token(client, email, password)
        login = web_login(client, email, password)
        assert login.status_code == 302, role
        client.get("/")  # follow to the landing page
        client.cookie_jar.clear() if hasattr(client, "cookie_jar") else None
        client.delete_cookie("session")
