"""factory_boy factories for the models. Bound to the app's scoped session."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import factory
from factory.alchemy import SQLAlchemyModelFactory

from pharmacy.extensions import db
from pharmacy.models import (
    Medicine,
    PatientProfile,
    Pharmacy,
    Role,
    StockBatch,
    User,
)
from pharmacy.services.auth import hash_password

# Hashing is deliberately slow; one hash serves every factory-made user.
DEFAULT_PASSWORD = "correct horse battery staple"
_DEFAULT_HASH = hash_password(DEFAULT_PASSWORD)


class Base(SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "flush"


class UserFactory(Base):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"user{n}@example.test")
    password_hash = _DEFAULT_HASH
    role = Role.PATIENT
    full_name = factory.Faker("name", locale="en_GB")


class PharmacyFactory(Base):
    class Meta:
        model = Pharmacy

    name = factory.Sequence(lambda n: f"Pharmacy {n}")
    ods_code = factory.Sequence(lambda n: f"FT{n:03d}")
    line1 = "1 Test Street"
    city = "Leeds"
    postcode = "LS1 1AA"
    latitude = 53.8
    longitude = -1.55


class MedicineFactory(Base):
    class Meta:
        model = Medicine

    code = factory.Sequence(lambda n: f"{900000000 + n}")
    name = factory.Sequence(lambda n: f"Testamol {n}mg tablets")
    ingredient = "testamol"
    strength = "500mg"
    form = "tablet"
    pack_size = 28
    pack_unit = "tablet"
    unit_price_minor = 299


class PatientFactory(Base):
    class Meta:
        model = PatientProfile

    nhs_number = factory.Sequence(lambda n: None)
    other_identifier_system = "https://example.test/patient-id"
    other_identifier = factory.Sequence(lambda n: f"P{n:06d}")
    given_name = "Test"
    family_name = factory.Sequence(lambda n: f"Patient{n}")
    date_of_birth = date(1970, 1, 1)


class StockBatchFactory(Base):
    class Meta:
        model = StockBatch

    pharmacy_id = factory.LazyFunction(lambda: PharmacyFactory().id)
    medicine = factory.SubFactory(MedicineFactory)
    lot_number = factory.Sequence(lambda n: f"LOT{n:05d}")
    expiry_date = factory.LazyFunction(lambda: date.today() + timedelta(days=365))
    quantity_on_hand = 100
    received_at = factory.LazyFunction(lambda: datetime.combine(date.today(), time(9), tzinfo=UTC))
