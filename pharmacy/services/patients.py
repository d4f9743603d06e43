"""Patients' own records: registration, profile, allergies and delivery addresses."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
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
    PendingRegistration,
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


def register(session: Session, form: Registration, *, today: date,
             now: datetime | None = None) -> PendingRegistration:
    """Check a registration form and keep it, pending, until its owner opens the link
    e-mailed to the address (`registration_mail`) and gives the password again
    (`confirm_registration`). No account exists before: this does the same work, and the
    caller answers the same, whether or not the address already has an account (the job
    that e-mails it tells that address so instead of sending a link), so no one learns here
    who has an account, and no one can hold an address they cannot read. The NHS number
    (optional) must pass its check digit.
    """
    now = now or utcnow()
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
    pending = PendingRegistration(
        email=auth.normalise_email(form.email), password_hash=auth.hash_password(form.password),
        given_name=form.given_name.strip()[:100], family_name=form.family_name.strip()[:100],
        date_of_birth=form.date_of_birth, nhs_number=number, created_at=now,
        expires_at=now + timedelta(days=CONFIRM_LINK_DAYS))
    session.add(pending)
    session.flush()
    return pending


def _open_account(session: Session, pending: PendingRegistration) -> User:
    """The account a confirmed registration opens (consent dates from the registration).

    When the NHS number is one the pharmacy already holds (a prescription came for that
    person), the account is not joined to that record here: knowing a number and a date of
    birth proves nothing. A link request waits for a pharmacist to check who the person
    is, and the answer is the same whether the record exists, is claimed or does not match
    (nothing is revealed about who is a patient here).
    """
    user = auth.create_user(session, email=pending.email, password="", role=Role.PATIENT,
                            full_name=f"{pending.given_name} {pending.family_name}",
                            password_hash=pending.password_hash)
    if pending.nhs_number is not None:
        known = session.scalar(select(PatientProfile).where(
            PatientProfile.nhs_number == pending.nhs_number))
        session.add(PatientLinkRequest(
            user_id=user.id, nhs_number=pending.nhs_number,
            patient_id=known.id if known else None, given_name=pending.given_name,
            family_name=pending.family_name, date_of_birth=pending.date_of_birth,
            requested_at=pending.created_at))  # consent dates from the registration
        session.flush()
        audit.record(session, action="patient.link_requested", entity_type="user",
                     entity_id=user.id, actor=user)
        return user
    patient = PatientProfile(
        nhs_number=None, given_name=pending.given_name, family_name=pending.family_name,
        date_of_birth=pending.date_of_birth, other_identifier_system=PATIENT_ID_SYSTEM,
        other_identifier=uuid.uuid4().hex)
    session.add(patient)
    _open_record(session, patient, user.id, consented_at=pending.created_at)
    session.flush()
    audit.record(session, action="patient.registered", entity_type="patient",
                 entity_id=patient.id, actor=user)
    return user


def _open_record(session: Session, patient: PatientProfile, user_id: int, *,
                 consented_at: datetime | None = None) -> None:
    depot = session.scalar(select(Pharmacy).order_by(Pharmacy.id))
    patient.user_id = user_id
    patient.nominated_pharmacy_id = patient.nominated_pharmacy_id or (depot.id if depot else None)
    patient.terms_accepted_at = patient.privacy_accepted_at = consented_at or utcnow()


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


@dataclass(frozen=True)
class NumberHistory:
    """Other accounts' requests for the same NHS number: a number asked for by several
    accounts, or refused before, is a sign that someone is trying numbers off letters."""

    waiting: list[PatientLinkRequest]
    refused: int


def number_history(session: Session, links: list[PatientLinkRequest]
                   ) -> dict[int, NumberHistory]:
    """For each waiting request, the other requests for its NHS number (one query)."""
    numbers = {link.nhs_number for link in links}
    others = session.scalars(select(PatientLinkRequest).where(
        PatientLinkRequest.nhs_number.in_(numbers),
        PatientLinkRequest.status.in_([LinkStatus.PENDING, LinkStatus.REFUSED]))
        .order_by(PatientLinkRequest.id)).all() if numbers else []
    return {link.id: NumberHistory(
        waiting=[o for o in others if o.nhs_number == link.nhs_number and o.id != link.id
                 and o.status is LinkStatus.PENDING],
        refused=sum(1 for o in others if o.nhs_number == link.nhs_number
                    and o.status is LinkStatus.REFUSED)) for link in links}


def link_requests(session: Session) -> list[PatientLinkRequest]:
    """Accounts waiting to be joined to a record, oldest first (for pharmacists). Every one
    has confirmed its e-mail address (accounts open only then)."""
    return list(session.scalars(select(PatientLinkRequest).where(
        PatientLinkRequest.status == LinkStatus.PENDING).order_by(PatientLinkRequest.id)))


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
    number = session.scalar(select(PatientLinkRequest.nhs_number).where(
        PatientLinkRequest.id == request_id))
    if number is None:
        raise NotFound("No such link request.")
    # Every request for the number, locked in id order: two pharmacists deciding two
    # accounts' requests for one number at once take turns (the second finds it decided).
    rivals = {r.id: r for r in session.scalars(select(PatientLinkRequest).where(
        PatientLinkRequest.nhs_number == number, PatientLinkRequest.status == LinkStatus.PENDING)
        .order_by(PatientLinkRequest.id).with_for_update())}
    link = rivals.pop(request_id, None) or session.get(PatientLinkRequest, request_id)
    assert link is not None
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
            session.execute(update(Notification).where(
                Notification.patient_id == patient.id, Notification.user_id.is_(None),
                Notification.sent_at.is_(None), Notification.failed_at.is_(None),
                Notification.created_at < now).values(
                failed_at=now, last_error="written before the account was linked")
                .execution_options(synchronize_session=False))
        _open_record(session, patient, link.user_id)
        patient.terms_accepted_at = patient.privacy_accepted_at = link.requested_at
        session.flush()
        link.patient_id = patient.id
        # The record has its account: no other can be linked to it, so the others asking
        # for the number are answered now (as any refusal, revealing nothing more).
        for other in rivals.values():
            _decide(session, other, LinkStatus.REFUSED, pharmacist, now,
                    "another account was linked to this record after an identity check")
    _decide(session, link, LinkStatus.CONFIRMED if confirm else LinkStatus.REFUSED,
            pharmacist, now, note, patient_id=patient.id if patient is not None else None)
    session.flush()
    return link


def _decide(session: Session, link: PatientLinkRequest, status: LinkStatus, pharmacist: User,
            now: datetime, note: str, *, patient_id: int | None = None) -> None:
    """Record a decision on a request, audit it and tell the account."""
    link.status = status
    link.decided_by_id, link.decided_at, link.note = pharmacist.id, now, note[:1000]
    audit.record(session, action=f"patient.link_{status.value}", entity_type="user",
                 entity_id=link.user_id, actor=pharmacist, reason=note[:500],
                 after={"patient": patient_id})
    session.add(Notification(
        user_id=link.user_id, kind=f"account.link_{status.value}",
        subject="Your Dispensary account",
        body=("Your account is now linked to your prescriptions at Dispensary.\n"
              if status is LinkStatus.CONFIRMED else
              "We could not link your account to a patient record. Please contact the "
              "pharmacy.\n")))


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

#: How long the link confirming a registration works.
CONFIRM_LINK_DAYS = 7
CONFIRM_PATH = "/register/confirm/"


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: At most this many registration links per address an hour (no one floods an inbox by
#: registering it over and over; a second registration, one with the right password after a
#: stranger's, still gets its own link).
REGISTRATION_LINKS_PER_HOUR = 3


def registration_mail(session: Session, pending_id: int, *, base_url: str,
                      now: datetime | None = None) -> RegistrationMail | None:
    """The message a registration sends to its address (run off the request, by a job, with
    the pending row locked): a link to confirm it, sent directly (there is no account to
    keep it for yet). When the address already has an account, that account gets a note
    instead (sign in, or reset the password; kept and sent like other notifications, none
    to a disabled account) and the pending registration goes. None when there is nothing to
    send directly: expired, already sent (a job run twice), the address already has an
    account, or it has had its links for the hour."""
    from . import notify

    now = now or utcnow()
    pending = session.scalar(select(PendingRegistration).where(
        PendingRegistration.id == pending_id).with_for_update())
    if pending is None or pending.expires_at <= now or pending.token_hash is not None:
        return None
    base = base_url.rstrip("/")
    user = auth.find_user_by_email(session, pending.email)
    if user is not None:
        session.delete(pending)
        if user.is_active:
            notify.create_notification(
                session, kind="account.already_registered", user_id=user.id,
                dedupe_key=f"already-registered:{user.id}:{notify.quarter_hour(now)}",
                sign_in=f"{base}/login", reset=f"{base}/password/forgot")
        return None
    recent = session.scalar(select(func.count(PendingRegistration.id)).where(
        PendingRegistration.email == pending.email, PendingRegistration.id != pending.id,
        PendingRegistration.token_hash.is_not(None),
        PendingRegistration.created_at > now - timedelta(hours=1))) or 0
    if recent >= REGISTRATION_LINKS_PER_HOUR:
        session.delete(pending)  # the links sent in the last hour still work
        return None
    token = secrets.token_urlsafe(32)
    pending.token_hash = _token_hash(token)
    subject, body = notify.render_notification(
        "account.confirm_email", link=f"{base}{CONFIRM_PATH}{token}", days=CONFIRM_LINK_DAYS)
    return RegistrationMail(pending.email, "account.confirm_email", subject, body)


def drop_pending_registration(session: Session, pending_id: int) -> None:
    """Forget a registration whose link could not be delivered at all."""
    session.execute(delete(PendingRegistration).where(PendingRegistration.id == pending_id))


@dataclass(frozen=True)
class RegistrationMail:
    """A message to an address that has no account yet (it is sent, not kept)."""

    to: str
    kind: str
    subject: str
    body: str


def pending_for_token(session: Session, token: str, *, now: datetime | None = None,
                      lock: bool = False) -> PendingRegistration:
    """The pending registration a link is for; InvalidRequest when unknown or expired."""
    stmt = select(PendingRegistration).where(
        PendingRegistration.token_hash == _token_hash(token[:512]))
    pending = session.scalar(stmt.with_for_update() if lock else stmt)
    if pending is None or pending.expires_at <= (now or utcnow()):
        raise InvalidRequest("This link has expired or has already been used. Register "
                             "again to have a new one sent.")
    return pending


#: Wrong passwords a registration link takes before the registration goes.
CONFIRM_ATTEMPTS = 5


class WrongPassword(InvalidRequest):
    """Not the password chosen at registration. Counted: the caller commits. ``closed``
    when that was the last try and the registration has gone."""

    def __init__(self, closed: bool) -> None:
        self.closed = closed
        super().__init__(
            "That was not the password you chose, too many times: this link no longer "
            "works. Register again to have a new one sent." if closed else
            "That is not the password you chose when you registered.",
            errors=[{"field": "password", "message": "Wrong password."}])


def confirm_registration(session: Session, token: str, password: str, *,
                         now: datetime | None = None) -> User | None:
    """Open the account of a registration whose link was opened, when the password given
    now is the one chosen then (a link opened by a mail scanner, or by someone an attacker
    registered the address for, opens nothing). The account, or None when the address got
    an account meanwhile (its owner should sign in). Either way the address's pending
    registrations go."""
    pending = pending_for_token(session, token, now=now, lock=True)
    if not auth.verify_password(pending.password_hash, password):
        pending.failed_attempts += 1
        closed = pending.failed_attempts >= CONFIRM_ATTEMPTS
        if closed:
            session.delete(pending)
        session.flush()
        raise WrongPassword(closed)
    email = pending.email
    for row in session.scalars(select(PendingRegistration).where(
            PendingRegistration.email == email)).all():
        session.delete(row)
    session.flush()
    if auth.find_user_by_email(session, email) is not None:
        return None
    try:
        with session.begin_nested():
            user = _open_account(session, pending)
    except IntegrityError:  # registered and confirmed twice at the same moment
        return None
    audit.record(session, action="user.email_confirmed", entity_type="user",
                 entity_id=user.id, actor=user)
    return user


def purge_pending_registrations(session: Session, *, now: datetime | None = None) -> int:
    """Forget registrations whose link expired unopened (nightly)."""
    now = now or utcnow()
    expired = session.scalars(select(PendingRegistration).where(
        PendingRegistration.expires_at <= now)).all()
    for row in expired:
        session.delete(row)
    session.flush()
    return len(expired)
