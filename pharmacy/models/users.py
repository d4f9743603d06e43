"""People: accounts with roles, patients and their clinical profile, prescribers, couriers."""

from __future__ import annotations

import enum
from datetime import date, datetime, time
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, TimestampMixin, str_enum, utcnow
from .encrypted import EncryptedString

if TYPE_CHECKING:
    from .catalog import Medicine
    from .sites import Pharmacy


class Role(enum.StrEnum):
    PATIENT = "patient"
    PHARMACIST = "pharmacist"
    COURIER = "courier"
    ADMIN = "admin"
    # A prescribing system that posts FHIR bundles; has no web pages.
    API_CLIENT = "api_client"


class User(TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("failed_login_count >= 0", name="failed_login_count_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(str_enum(Role, "role"), index=True)
    full_name: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(default=True)
    failed_login_count: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    # Bumped on password change or forced logout; API tokens carry it, so old ones die.
    token_generation: Mapped[int] = mapped_column(default=0)
    # Optional second factor (pharmacists, admins): an RFC 6238 secret, set when enrolment
    # starts and in force once a code has confirmed it; the last time step used, so that a
    # code is never accepted twice. Encrypted at rest: with it, anyone holding a copy of the
    # database could make the codes.
    # Deferred: loaded (and decrypted) only where a code is checked, not with every request's
    # user, so a seed no key opens breaks that one check, not the account or its reset.
    totp_secret: Mapped[str | None] = mapped_column(EncryptedString(255), deferred=True)
    totp_enabled_at: Mapped[datetime | None]
    totp_last_counter: Mapped[int | None]

    patient: Mapped[PatientProfile | None] = relationship(back_populates="user")
    courier: Mapped[Courier | None] = relationship(back_populates="user")

    def __repr__(self) -> str:
        return f"<User {self.id} {self.role.value}>"


class PatientProfile(TimestampMixin, Base):
    """A patient. May exist before an account does (created from a prescription's NHS number)."""

    __tablename__ = "patients"
    __table_args__ = (
        CheckConstraint(
            "nhs_number IS NOT NULL OR other_identifier IS NOT NULL", name="has_identifier"
        ),
        UniqueConstraint("other_identifier_system", "other_identifier"),
        CheckConstraint("sync_day IS NULL OR sync_day BETWEEN 1 AND 28", name="sync_day_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), unique=True)
    nhs_number: Mapped[str | None] = mapped_column(String(10), unique=True)
    other_identifier_system: Mapped[str | None] = mapped_column(String(200))
    other_identifier: Mapped[str | None] = mapped_column(String(64))
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date]
    phone: Mapped[str | None] = mapped_column(String(32))
    nominated_pharmacy_id: Mapped[int | None] = mapped_column(ForeignKey("pharmacies.id"))
    # NHS prescription charge exemption category (e.g. "A" age 60+), None = pays the charge.
    charge_exemption: Mapped[str | None] = mapped_column(String(8))
    terms_accepted_at: Mapped[datetime | None]
    privacy_accepted_at: Mapped[datetime | None]
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Refill synchronisation: the day of the month all repeat items are delivered together.
    sync_day: Mapped[int | None]
    uses_dose_pack: Mapped[bool] = mapped_column(default=False)

    user: Mapped[User | None] = relationship(back_populates="patient")
    nominated_pharmacy: Mapped[Pharmacy | None] = relationship()
    allergies: Mapped[list[Allergy]] = relationship(
        back_populates="patient", cascade="all, delete-orphan"
    )
    current_medications: Mapped[list[CurrentMedication]] = relationship(
        back_populates="patient", cascade="all, delete-orphan"
    )
    addresses: Mapped[list[Address]] = relationship(
        back_populates="patient", cascade="all, delete-orphan"
    )


class Allergy(Base):
    """A recorded allergy or intolerance; `substance` is an ingredient or an ATC class code."""

    __tablename__ = "allergies"
    __table_args__ = (UniqueConstraint("patient_id", "substance"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    substance: Mapped[str] = mapped_column(String(100))
    reaction: Mapped[str | None] = mapped_column(String(200))
    recorded_at: Mapped[datetime]

    patient: Mapped[PatientProfile] = relationship(back_populates="allergies")


class CurrentMedication(Base):
    __tablename__ = "current_medications"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    medicine_id: Mapped[int | None] = mapped_column(ForeignKey("medicines.id"))
    description: Mapped[str] = mapped_column(String(200))
    started_on: Mapped[date | None]

    patient: Mapped[PatientProfile] = relationship(back_populates="current_medications")
    medicine: Mapped[Medicine | None] = relationship()


class Address(TimestampMixin, Base):
    __tablename__ = "addresses"
    __table_args__ = (
        CheckConstraint("latitude IS NULL OR (latitude BETWEEN -90 AND 90)", name="lat_range"),
        CheckConstraint(
            "longitude IS NULL OR (longitude BETWEEN -180 AND 180)", name="lon_range"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patients.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(50), default="Home")
    line1: Mapped[str] = mapped_column(String(200))
    line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str] = mapped_column(String(100))
    postcode: Mapped[str] = mapped_column(String(16))
    country: Mapped[str] = mapped_column(String(2), default="GB")
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    # Safe place, access codes: shown only to the courier assigned to the stop.
    delivery_notes: Mapped[str | None] = mapped_column(Text)
    is_default: Mapped[bool] = mapped_column(default=False)

    patient: Mapped[PatientProfile] = relationship(back_populates="addresses")


class PrescriberProfession(enum.StrEnum):
    DOCTOR = "doctor"
    NURSE = "nurse"
    PHARMACIST = "pharmacist"
    DENTIST = "dentist"
    OTHER = "other"


class Prescriber(TimestampMixin, Base):
    __tablename__ = "prescribers"
    __table_args__ = (UniqueConstraint("registration_body", "registration_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    given_name: Mapped[str | None] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    profession: Mapped[PrescriberProfession] = mapped_column(
        str_enum(PrescriberProfession, "prescriber_profession")
    )
    # GMC, NMC, GPhC, HCPC, GDC ...
    registration_body: Mapped[str] = mapped_column(String(16))
    registration_number: Mapped[str] = mapped_column(String(32))
    organisation_ods_code: Mapped[str | None] = mapped_column(String(16))
    organisation_name: Mapped[str | None] = mapped_column(String(200))


class Courier(TimestampMixin, Base):
    __tablename__ = "couriers"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    pharmacy_id: Mapped[int] = mapped_column(ForeignKey("pharmacies.id"), index=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    # Default daily shift in the pharmacy's local time.
    shift_start: Mapped[time]
    shift_end: Mapped[time]
    default_vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id"))

    user: Mapped[User] = relationship(back_populates="courier")


class Notification(Base):
    """A message to a patient or user, written in the same transaction as the change it reports.

    Delivery (e-mail, SMS, push) reads unsent rows; the row itself is the record of what was
    said. The body never carries more clinical detail than the recipient already has.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("user_id IS NOT NULL OR patient_id IS NOT NULL", name="has_recipient"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    kind: Mapped[str] = mapped_column(String(50))  # e.g. "prescription.rejected"
    # Makes scheduled reminders idempotent: one notification per key, however often the
    # job runs ("repeat-due:<item>:<date>").
    dedupe_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    channel: Mapped[str] = mapped_column(String(20), default="email")
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    # A message the relay refused (a bad address) is tried again later, with back-off, and
    # given up after a few tries; it never holds up the messages behind it.
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(100))
    next_attempt_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]


class LinkStatus(enum.StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REFUSED = "refused"


class PatientLinkRequest(Base):
    """A new account that gave an NHS number, waiting to be joined to that patient's
    record. An NHS number and a date of birth are printed on letters and forms, so they
    prove nothing: a pharmacist checks who the person is first, and until then the account
    sees nothing (held number or not, so registering reveals nothing either)."""

    __tablename__ = "patient_link_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    # The NHS number they gave; the record holding it when they asked, if there was one
    # (confirming without one creates the record, the identity then checked).
    nhs_number: Mapped[str] = mapped_column(String(10))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    # What the person typed, to compare with the record.
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date]
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[LinkStatus] = mapped_column(str_enum(LinkStatus, "link_status"),
                                               default=LinkStatus.PENDING)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    patient: Mapped[PatientProfile | None] = relationship()


class GeocodeCache(Base):
    """Geocoder answers by normalised address, so each address is looked up once."""

    __tablename__ = "geocode_cache"
    __table_args__ = (UniqueConstraint("provider", "query"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(50))
    query: Mapped[str] = mapped_column(String(400))
    latitude: Mapped[float | None]   # None: the provider found nothing
    longitude: Mapped[float | None]
    display_name: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PendingRegistration(Base):
    """A registration waiting for its owner to open the link e-mailed to the address and
    give the password again. No account exists until then: signing in to the address, or
    registering it again, behaves as for any address (nothing is revealed, and no one can
    hold an address they cannot read). Expired rows are purged every night."""

    __tablename__ = "pending_registrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date]
    nhs_number: Mapped[str | None] = mapped_column(String(10))
    # SHA-256 of the link's random token (the token itself is only in the e-mail).
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    # Wrong passwords given with the link: after a few the registration goes (whoever holds
    # a leaked link cannot go on guessing; the owner registers again).
    failed_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class RecoveryCode(Base):
    """One of the single-use codes that stand in for an authenticator app that was lost. Made
    (and shown once) when two-step sign-in is turned on, or again on request; only their
    SHA-256 is kept (each holds about 79 random bits, so the hash cannot be searched back)."""

    __tablename__ = "recovery_codes"
    __table_args__ = (UniqueConstraint("user_id", "code_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]
