"""Patients' own records: registration, profile, allergies and delivery addresses."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session
from stdnum.gb import nhs

from ..errors import Conflict, Forbidden, InvalidRequest, NotFound
from ..models import (
    Address,
    Allergy,
    LinkStatus,
    Notification,
    PatientLinkRequest,
    PatientProfile,
    Pharmacy,
    Role,
    User,
)
from ..models.base import utcnow
from . import audit, auth

MIN_PASSWORD = 10
EXEMPTIONS = {
    "": "I pay prescription charges",
    "A": "Aged 60 or over, or under 16",
    "B": "Aged 16, 17 or 18 and in full-time education",
    "D": "Maternity exemption certificate",
    "E": "Medical exemption certificate",
    "F": "Prescription prepayment certificate",
    "L": "HC2 (NHS Low Income Scheme) certificate",
    "X": "Free-of-charge contraceptives only",
}
PATIENT_ID_SYSTEM = "urn:dispensary:patient"


@dataclass(frozen=True)
class Registration:
    email: str
    password: str
    given_name: str
    family_name: str
    date_of_birth: date
    nhs_number: str | None
    accepted_terms: bool
    accepted_privacy: bool


def register(session: Session, form: Registration, *, today: date) -> User | None:
    """Create a patient account; the NHS number (optional) must pass its check digit.

    None when the address already has an account: nothing is created, and the caller
    answers exactly as for a new one (it sends the address a message in both cases:
    `send_registration_mail`). A new account signs in once its owner has opened the link
    sent to the address (`confirm_email`).

    When the NHS number is one the pharmacy already holds (a prescription came for that
    person), the account is not joined to that record here: knowing a number and a date of
    birth proves nothing. A link request waits for a pharmacist to check who the person
    is, and the answer is the same whether the record exists, is claimed or does not match
    (nothing is revealed about who is a patient here).
    """
    errors = []
    if not auth.looks_like_email(form.email):
        errors.append({"field": "email", "message": "Give your e-mail address."})
    if len(form.password) < MIN_PASSWORD:
        errors.append({"field": "password",
                       "message": f"Use at least {MIN_PASSWORD} characters."})
    if not form.accepted_terms or not form.accepted_privacy:
        errors.append({"field": "consent",
                       "message": "Accept the terms and the privacy notice to register."})
    if not (date(1900, 1, 1) <= form.date_of_birth <= today):
        errors.append({"field": "date_of_birth", "message": "Give a real date of birth."})
    number = (form.nhs_number or "").replace(" ", "") or None
    if number is not None and not nhs.is_valid(number):
        errors.append({"field": "nhs_number",
                       "message": "That NHS number is not valid; check the 10 digits."})
    if not form.given_name.strip() or not form.family_name.strip():
        errors.append({"field": "name", "message": "Give your first and last name."})
    if errors:
        raise InvalidRequest("Please correct the form.", errors=errors)
    if auth.find_user_by_email(session, form.email) is not None:
        # Answered like a new registration (the caller e-mails the address either way), so
        # no one learns who has an account here; the password is hashed all the same, so
        # that this answer takes as long.
        auth.hash_password(form.password)
        return None
    user = auth.create_user(session, email=form.email, password=form.password,
                            role=Role.PATIENT,
                            full_name=f"{form.given_name.strip()} {form.family_name.strip()}")
    user.email_verified_at = None  # until the owner opens the link sent to the address
    if number is not None:
        known = session.scalar(select(PatientProfile).where(PatientProfile.nhs_number == number))
        link = PatientLinkRequest(
            user_id=user.id, nhs_number=number, patient_id=known.id if known else None,
            given_name=form.given_name.strip()[:100], family_name=form.family_name.strip()[:100],
            date_of_birth=form.date_of_birth)
        session.add(link)
        session.flush()
        audit.record(session, action="patient.link_requested", entity_type="user",
                     entity_id=user.id, actor=user)
        return user
    patient = PatientProfile(
        nhs_number=None, given_name=form.given_name.strip()[:100],
        family_name=form.family_name.strip()[:100], date_of_birth=form.date_of_birth,
        other_identifier_system=PATIENT_ID_SYSTEM, other_identifier=uuid.uuid4().hex)
    session.add(patient)
    _open_record(session, patient, user.id)
    session.flush()
    audit.record(session, action="patient.registered", entity_type="patient",
                 entity_id=patient.id, actor=user)
    return user


def _open_record(session: Session, patient: PatientProfile, user_id: int) -> None:
    depot = session.scalar(select(Pharmacy).order_by(Pharmacy.id))
    patient.user_id = user_id
    patient.nominated_pharmacy_id = patient.nominated_pharmacy_id or (depot.id if depot else None)
    patient.terms_accepted_at = patient.privacy_accepted_at = utcnow()


def pending_link(session: Session, user: User) -> PatientLinkRequest | None:
    return session.scalar(select(PatientLinkRequest).where(
        PatientLinkRequest.user_id == user.id, PatientLinkRequest.status == LinkStatus.PENDING))


def held_record(session: Session, link: PatientLinkRequest, *,
                lock: bool = False) -> PatientProfile | None:
    """The record now holding the link's NHS number (a prescription may have come for it
    since the request)."""
    stmt = select(PatientProfile).where(PatientProfile.nhs_number == link.nhs_number)
    return session.scalar(stmt.with_for_update() if lock else stmt)


def refuse_pending_links(session: Session, user: User, *, reason: str) -> None:
    """A deactivated account's waiting link requests are refused with it."""
    for link in session.scalars(select(PatientLinkRequest).where(
            PatientLinkRequest.user_id == user.id,
            PatientLinkRequest.status == LinkStatus.PENDING)):
        link.status, link.decided_at, link.note = LinkStatus.REFUSED, utcnow(), reason[:1000]


def link_requests(session: Session) -> list[PatientLinkRequest]:
    """Accounts waiting to be joined to a record, oldest first (for pharmacists): only
    those whose owner has confirmed the e-mail address (no queue of throwaway claims)."""
    return list(session.scalars(select(PatientLinkRequest).join(
        User, User.id == PatientLinkRequest.user_id).where(
        PatientLinkRequest.status == LinkStatus.PENDING, User.email_verified_at.is_not(None))
        .order_by(PatientLinkRequest.id)))


def decide_link(session: Session, request_id: int, *, confirm: bool, note: str,
                pharmacist: User) -> PatientLinkRequest:
    """A pharmacist who has checked the person's identity (ID at the counter, a call to the
    number the prescriber gave) joins the account to the record, or refuses. Messages
    written to the record before it had an account are not sent to the new one."""
    if pharmacist.role is not Role.PHARMACIST:
        raise Forbidden("Only a pharmacist can link an account to a patient record.")
    note = note.strip()
    if not note:
        raise InvalidRequest("Say how the identity was checked, or why it is refused.")
    link = session.scalar(select(PatientLinkRequest).where(PatientLinkRequest.id == request_id)
                          .with_for_update())
    if link is None:
        raise NotFound("No such link request.")
    if link.status is not LinkStatus.PENDING:
        raise Conflict(f"This request was already {link.status.value}.")
    now = utcnow()
    patient = held_record(session, link, lock=True)
    if confirm:
        if not link.user.is_active:
            raise Conflict("That account has been deactivated; refuse this request.")
        if patient is None:  # no prescription for them yet: their record starts now
            patient = PatientProfile(
                nhs_number=link.nhs_number, given_name=link.given_name,
                family_name=link.family_name, date_of_birth=link.date_of_birth)
            session.add(patient)
        elif patient.user_id is not None:
            raise Conflict("That record already has an account; refuse this request.")
        else:
            session.execute(Notification.__table__.update().where(
                Notification.patient_id == patient.id, Notification.user_id.is_(None),
                Notification.sent_at.is_(None), Notification.failed_at.is_(None),
                Notification.created_at < now).values(
                failed_at=now, last_error="written before the account was linked"))
        _open_record(session, patient, link.user_id)
        patient.terms_accepted_at = patient.privacy_accepted_at = link.requested_at
        session.flush()
        link.patient_id = patient.id
    link.status = LinkStatus.CONFIRMED if confirm else LinkStatus.REFUSED
    link.decided_by_id, link.decided_at, link.note = pharmacist.id, now, note[:1000]
    audit.record(session, action=f"patient.link_{link.status.value}", entity_type="user",
                 entity_id=link.user_id, actor=pharmacist, reason=note[:500],
                 after={"patient": patient.id if patient is not None else None})
    session.add(Notification(
        user_id=link.user_id, kind=f"account.link_{link.status.value}",
        subject="Your Dispensary account",
        body=("Your account is now linked to your prescriptions at Dispensary.\n"
              if confirm else
              "We could not link your account to a patient record. Please contact the "
              "pharmacy.\n")))
    session.flush()
    return link


def update_profile(session: Session, patient: PatientProfile, *, actor: User,
                   phone: str | None, charge_exemption: str | None, sync_day: int | None,
                   uses_dose_pack: bool, nominated_pharmacy_id: int | None) -> PatientProfile:
    if charge_exemption not in EXEMPTIONS:
        raise InvalidRequest("Choose an exemption from the list.")
    if sync_day is not None and not 1 <= sync_day <= 28:
        raise InvalidRequest("Pick a delivery day between 1 and 28.")
    if nominated_pharmacy_id is not None and session.get(Pharmacy, nominated_pharmacy_id) is None:
        raise InvalidRequest("Unknown pharmacy.")
    before = {"charge_exemption": patient.charge_exemption, "sync_day": patient.sync_day,
              "uses_dose_pack": patient.uses_dose_pack,
              "nominated_pharmacy_id": patient.nominated_pharmacy_id}
    patient.phone = (phone or "").strip()[:32] or None
    patient.charge_exemption = charge_exemption or None
    patient.sync_day = sync_day
    patient.uses_dose_pack = uses_dose_pack
    patient.nominated_pharmacy_id = nominated_pharmacy_id
    after = {"charge_exemption": patient.charge_exemption, "sync_day": patient.sync_day,
             "uses_dose_pack": patient.uses_dose_pack,
             "nominated_pharmacy_id": patient.nominated_pharmacy_id}
    audit.record(session, action="patient.profile_updated", entity_type="patient",
                 entity_id=patient.id, actor=actor, before=before, after=after)
    session.flush()
    return patient


def add_allergy(session: Session, patient: PatientProfile, substance: str, *,
                actor: User) -> None:
    text = substance.strip().lower()[:100]
    if not text:
        raise InvalidRequest("Name the medicine or substance.")
    if any(a.substance == text for a in patient.allergies):
        return
    patient.allergies.append(Allergy(substance=text, recorded_at=utcnow()))
    audit.record(session, action="patient.allergy_added", entity_type="patient",
                 entity_id=patient.id, actor=actor, after={"substance": text})
    session.flush()


def remove_allergy(session: Session, patient: PatientProfile, allergy_id: int, *,
                   actor: User) -> None:
    allergy = session.get(Allergy, allergy_id)
    if allergy is None or allergy.patient_id != patient.id:
        raise NotFound("No such allergy on your record.")
    audit.record(session, action="patient.allergy_removed", entity_type="patient",
                 entity_id=patient.id, actor=actor, before={"substance": allergy.substance})
    session.delete(allergy)
    session.flush()


@dataclass(frozen=True)
class AddedAddress:
    address: Address
    located: bool
    problem: str | None


def add_address(session: Session, patient: PatientProfile, *, actor: User, line1: str,
                line2: str | None, city: str, postcode: str, delivery_notes: str | None,
                make_default: bool) -> AddedAddress:
    """Save an address and find it on the map (geocoded once; cached)."""
    from . import geocoding

    if not line1.strip() or not city.strip() or not postcode.strip():
        raise InvalidRequest("Give the first line, town and postcode.")
    # Joined to the patient only after the map lookup: its cache write flushes the session,
    # and a half-made address hanging off the patient must not be flushed with it.
    address = Address(line1=line1.strip()[:200],
                      line2=(line2 or "").strip()[:200] or None, city=city.strip()[:100],
                      postcode=postcode.strip().upper()[:16],
                      delivery_notes=(delivery_notes or "").strip() or None,
                      is_default=make_default or not patient.addresses)
    problem = None
    try:
        found = geocoding.geocode_address(session, line1=address.line1, line2=address.line2,
                                          city=address.city, postcode=address.postcode)
    except geocoding.GeocoderUnavailable:
        found, problem = None, "We could not reach the map service; we will try again later."
    if found is not None:
        address.latitude, address.longitude = found.latitude, found.longitude
    elif problem is None:
        problem = "We could not find that address on the map; check the postcode."
    address.patient = patient
    session.add(address)
    if address.is_default:
        for other in patient.addresses:
            other.is_default = False
        address.is_default = True
    session.flush()
    audit.record(session, action="patient.address_added", entity_type="patient",
                 entity_id=patient.id, actor=actor, after={"address_id": address.id,
                                                           "located": found is not None})
    return AddedAddress(address, found is not None, problem)


# --- the e-mail address is the owner's --------------------------------------------------------

#: How long the link confirming a new account's address works.
CONFIRM_LINK_DAYS = 7
CONFIRM_PATH = "/register/confirm/"
_CONFIRM_SALT = "dispensary.email-confirm"


def confirm_token(user: User, *, secret_key: str) -> str:
    return str(URLSafeTimedSerializer(secret_key, salt=_CONFIRM_SALT).dumps(
        {"u": user.id, "e": user.email}))


def registration_mail(session: Session, email: str, *, secret_key: str, base_url: str,
                      now: datetime | None = None) -> int | None:
    """The message a registration sends to its address (run off the request, by a job): a
    link to confirm a new, unconfirmed account; or, when the address already had an
    account, a note saying so (sign in, or reset the password). At most one per account per
    quarter hour. The id of the message, or None."""
    from . import notify

    now = now or utcnow()
    user = auth.find_user_by_email(session, email) if auth.looks_like_email(email) else None
    if user is None or not user.is_active:
        return None
    window = f"{now:%Y%m%d%H}-{now.minute // 15}"
    if user.email_verified_at is None:
        link = f"{base_url.rstrip('/')}{CONFIRM_PATH}{confirm_token(user, secret_key=secret_key)}"
        row = notify.create_notification(
            session, kind="account.confirm_email", user_id=user.id,
            dedupe_key=f"confirm-email:{user.id}:{window}", link=link, days=CONFIRM_LINK_DAYS)
    else:
        row = notify.create_notification(
            session, kind="account.already_registered", user_id=user.id,
            dedupe_key=f"already-registered:{user.id}:{window}",
            sign_in=f"{base_url.rstrip('/')}/login",
            reset=f"{base_url.rstrip('/')}/password/forgot")
    return row.id if row is not None else None


def confirm_email(session: Session, token: str, *, secret_key: str,
                  now: datetime | None = None) -> User:
    """Open the link sent to a new account's address: the address is confirmed (audited)
    and the owner may sign in. Opening it again changes nothing. It does not sign anyone
    in: whoever holds the link still needs the password."""
    now = now or utcnow()
    refused = InvalidRequest("This link has expired or is not valid. Sign in to have a new "
                             "one sent.")
    try:
        data = URLSafeTimedSerializer(secret_key, salt=_CONFIRM_SALT).loads(
            token[:512], max_age=CONFIRM_LINK_DAYS * 86_400)
    except (BadSignature, SignatureExpired):
        raise refused from None
    user = session.get(User, data.get("u")) if isinstance(data, dict) and isinstance(
        data.get("u"), int) else None
    if user is None or not user.is_active or user.email != data.get("e"):
        raise refused
    if user.email_verified_at is None:
        user.email_verified_at = now
        audit.record(session, action="user.email_confirmed", entity_type="user",
                     entity_id=user.id, actor=user)
    return user
