"""Registration, profile, allergies and addresses through the patient's pages."""

from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import func, select

from pharmacy.models import AuditEvent, PatientProfile, User
from tests.factories import PharmacyFactory
from tests.pharmacy.helpers import (
    CapturingBackend,
    csrf_token,
    register_and_confirm,
    registration_mail,
    web_login,
)

GOOD = {"given_name": "Rosa", "family_name": "Parkes", "date_of_birth": "1958-02-04",
        "nhs_number": "943 476 5919", "email": "rosa@example.com",
        "password": "a long enough password", "terms": "yes", "privacy": "yes"}


@pytest.fixture()
def registered(client, db, app, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setitem(app.config, "GEOCODER", "none")
    PharmacyFactory()
    db.session.commit()
    # Without an NHS number the record opens once the address is confirmed (with one, a
    # pharmacist checks first).
    signed_in = register_and_confirm(client, db, {**GOOD, "nhs_number": ""})
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
    return client


def test_registration_creates_a_patient_with_consent_and_signs_in(registered, db) -> None:  # type: ignore[no-untyped-def]
    patient = db.session.scalar(select(PatientProfile))
    assert patient.nhs_number is None and patient.other_identifier
    assert patient.terms_accepted_at is not None and patient.privacy_accepted_at is not None
    assert patient.nominated_pharmacy_id is not None
    assert registered.get("/patient/").status_code == 200


@pytest.mark.parametrize("change,message", [
    ({"nhs_number": "9434765918"}, "NHS number is not valid"),
    ({"terms": ""}, "Accept the terms"),
    ({"password": "short"}, "at least 10 characters"),
    ({"date_of_birth": "not a date"}, "real date of birth"),
])
def test_registration_problems_are_explained_and_nothing_is_created(
        client, db, change, message) -> None:  # type: ignore[no-untyped-def]
    token = csrf_token(client, "/register")
    response = client.post("/register", data={**GOOD, **change, "csrf_token": token})
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert db.session.scalar(select(User)) is None


def test_a_second_account_for_the_same_email_is_not_made_and_not_revealed(  # type: ignore[no-untyped-def]
        registered, client, db) -> None:
    registered.post("/logout", data={"csrf_token": csrf_token(registered, "/patient/")})
    token = csrf_token(client, "/register")
    again = client.post("/register", data={**GOOD, "email": GOOD["email"].upper(),
                                           "password": "another long password",
                                           "csrf_token": token})
    fresh = client.post("/register", data={**GOOD, "email": "someone.new@example.com",
                                           "password": "another long password",
                                           "csrf_token": token})
    # The same page either way: no one learns here which addresses have accounts.
    assert again.status_code == fresh.status_code == 200
    assert again.get_data(as_text=True) == fresh.get_data(as_text=True)
    # Nor by signing in with the password just chosen: no account exists for either.
    for email in (GOOD["email"], "someone.new@example.com"):
        tried = web_login(client, email, "another long password")
        assert tried.status_code == 401
    assert db.session.scalar(select(func.count(User.id))) == 1
    sent = registration_mail(db)
    assert [(m.to, m.kind) for m in sent] == [("someone.new@example.com",
                                               "account.confirm_email")]
    from pharmacy.models import Notification

    owner = db.session.scalar(select(User).where(User.email == GOOD["email"]))
    note = db.session.scalar(select(Notification).where(
        Notification.user_id == owner.id, Notification.kind == "account.already_registered"))
    assert note is not None and "/password/forgot" in note.body  # the owner is told
    # Registering the new address over and over sends 3 links an hour, no more.
    for _ in range(3):
        client.post("/register", data={**GOOD, "email": "someone.new@example.com",
                                       "csrf_token": token})
    assert len(registration_mail(db)) == 2


def test_a_registration_opens_only_with_its_link_and_its_password(client, db) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from pharmacy.models import PendingRegistration
    from pharmacy.models.base import utcnow
    from pharmacy.services import patients

    PharmacyFactory()
    db.session.commit()
    # Someone registers an address they cannot read, with their own password...
    client.post("/register", data={**GOOD, "nhs_number": "", "password": "the squatters pw",
                                   "csrf_token": csrf_token(client, "/register")})
    (squat,) = registration_mail(db)
    link = re.search(r"(/register/confirm/\S+)", squat.body).group(1)
    assert client.get("/register/confirm/forged").status_code == 400
    # ...the owner (or a mail scanner) opens the link: without that password nothing opens.
    assert client.get(link).status_code == 302
    wrong = client.post("/register/confirm", data={
        "csrf_token": csrf_token(client, "/register/confirm"), "password": GOOD["password"]})
    assert wrong.status_code == 422
    assert db.session.scalar(select(func.count(User.id))) == 0
    # The owner registers for real and opens their own link: the account is theirs.
    assert register_and_confirm(client, db, {**GOOD, "nhs_number": ""}).status_code == 302
    user = db.session.scalar(select(User))
    assert user.email == GOOD["email"] and user.patient is not None
    assert db.session.scalar(select(func.count(PendingRegistration.id))) == 0  # both gone
    assert client.get(link).status_code == 400  # the squatter's link is dead too
    # Links that expire unopened are forgotten overnight.
    client.post("/register", data={**GOOD, "email": "late@example.com",
                                   "csrf_token": csrf_token(client, "/register")})
    assert patients.purge_pending_registrations(db.session) == 0
    assert patients.purge_pending_registrations(
        db.session, now=utcnow() + timedelta(days=8)) == 1


def test_profile_allergies_and_address(registered, db) -> None:  # type: ignore[no-untyped-def]
    token = csrf_token(registered, "/patient/profile")
    saved = registered.post("/patient/profile", data={
        "csrf_token": token, "phone": "07700 900123", "charge_exemption": "A", "sync_day": "15",
        "uses_dose_pack": "yes", "nominated_pharmacy_id": ""})
    assert saved.status_code == 302
    registered.post("/patient/allergies", data={"csrf_token": token, "substance": "Penicillin"})
    added = registered.post("/patient/addresses", data={
        "csrf_token": token, "line1": "2 Park Row", "city": "Leeds", "postcode": "ls1 5hn"})
    assert added.status_code == 302
    page = registered.get("/patient/profile").get_data(as_text=True)
    assert "penicillin" in page and "LS1 5HN" in page and "not found on the map" in page
    patient = db.session.scalar(select(PatientProfile))
    assert (patient.charge_exemption, patient.sync_day, patient.uses_dose_pack) == ("A", 15, True)
    bad = registered.post("/patient/profile", data={"csrf_token": token, "sync_day": "31",
                                                    "charge_exemption": ""})
    assert bad.status_code == 302
    db.session.expire_all()
    assert db.session.scalar(select(PatientProfile)).sync_day == 15  # unchanged
    actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"patient.registered", "patient.profile_updated", "patient.allergy_added",
            "patient.address_added"} <= actions


def test_dose_calendar_refill_sync_and_packing_list_pages(client, db) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.models import Role
    from pharmacy.services.demo import seed_demo
    from tests.factories import DEFAULT_PASSWORD, UserFactory
    from tests.pharmacy.helpers import web_login

    seed_demo(db.session)
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    patient = db.session.scalar(select(PatientProfile).join(User).where(
        User.email == "patient@example.com"))
    web_login(client, "patient@example.com", "demo-patient-1")
    calendar = client.get("/patient/dose-calendar")
    assert calendar.status_code == 200
    assert "Dose calendar" in calendar.get_data(as_text=True)
    assert client.get("/patient/dose-calendar?days=999").status_code == 302
    assert client.get("/patient/refill-sync").status_code == 302  # no sync day chosen yet
    patient.sync_day = 10
    db.session.commit()
    assert "All your repeats on one day" in client.get("/patient/refill-sync").get_data(
        as_text=True)
    client.post("/logout", data={"csrf_token": csrf_token(client, "/patient/")})
    web_login(client, pharmacist.email, DEFAULT_PASSWORD)
    packing = client.get(f"/pharmacist/patients/{patient.id}/packing-list")
    assert packing.status_code == 200
    assert "Dose pack for" in packing.get_data(as_text=True)
    assert client.get("/pharmacist/patients/999999/packing-list").status_code == 404


def test_pharmacy_medicines_need_safe_answers_to_the_standard_questions(client, db) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.models import Role
    from pharmacy.services.basket import SAFETY_QUESTIONS, safety_check
    from tests.factories import DEFAULT_PASSWORD, MedicineFactory, PatientFactory, UserFactory
    from tests.pharmacy.helpers import web_login

    safe = {key: answer for key, _, answer in SAFETY_QUESTIONS}
    assert safety_check(safe) == []
    assert len(safety_check({**safe, "pregnant": "yes"})) == 1
    assert len(safety_check({})) == len(SAFETY_QUESTIONS)  # unanswered is not safe

    user = UserFactory(role=Role.PATIENT)
    PatientFactory(user_id=user.id)
    product = MedicineFactory(prescription_only=False)
    db.session.commit()
    web_login(client, user.email, DEFAULT_PASSWORD)
    token = csrf_token(client, "/patient/shop")
    refused = client.post("/patient/basket", data={
        "csrf_token": token, "key": f"otc:{product.id}", "quantity": "1",
        **safe, "other_medicines": "yes"}, follow_redirects=True)
    assert "speak to our pharmacist" in refused.get_data(as_text=True)
    assert "Your basket is empty" in client.get("/patient/basket").get_data(as_text=True)
    client.post("/patient/basket", data={"csrf_token": token, "key": f"otc:{product.id}",
                                         "quantity": "1", **safe})
    assert product.name in client.get("/patient/basket").get_data(as_text=True)


@pytest.mark.parametrize("held", ["unclaimed", "claimed", "other_birthday", "not_held"])
def test_an_nhs_number_waits_for_a_pharmacist_and_registering_reveals_nothing(  # type: ignore[no-untyped-def]
        app, client, db, held) -> None:
    """Anyone who has seen a letter knows an NHS number and a date of birth: registering with
    them must not open a record, and must answer the same whether the pharmacy holds the
    number or not (and claiming a number first must not capture later prescriptions)."""
    from pharmacy.models import LinkStatus, Notification, PatientLinkRequest, Role
    from tests.factories import DEFAULT_PASSWORD, PatientFactory, PharmacyFactory, UserFactory

    PharmacyFactory()
    record = waiting = None
    if held != "not_held":
        owner = UserFactory(role=Role.PATIENT) if held == "claimed" else None
        record = PatientFactory(nhs_number=GOOD["nhs_number"].replace(" ", ""),
                                family_name="Okonkwo-Hale", date_of_birth=date(1958, 2, 4)
                                if held != "other_birthday" else date(1979, 1, 1),
                                user_id=owner.id if owner else None)
        waiting = Notification(patient_id=record.id, kind="prescription.rejected",
                               subject="A prescription", body="...\n")
        db.session.add(waiting)
    db.session.commit()
    response = register_and_confirm(client, db, GOOD)
    assert (response.status_code, response.headers["Location"]) == (302, "/patient/")
    page = client.get("/patient/").get_data(as_text=True)
    assert "waiting for our pharmacist to check your details" in page and "Okonkwo" not in page
    user = db.session.scalar(select(User).where(User.email == GOOD["email"]))
    assert user.patient is None
    assert client.get("/patient/medicines").status_code == 403  # nothing of any record
    link = db.session.scalar(select(PatientLinkRequest))
    assert (link.user_id, link.nhs_number, link.status) == (user.id, "9434765919",
                                                            LinkStatus.PENDING)

    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    staff = app.test_client()
    web_login(staff, pharmacist.email, DEFAULT_PASSWORD)
    page = staff.get("/pharmacist/account-links").get_data(as_text=True)
    assert GOOD["email"] in page
    assert ("does not match" in page) is (held == "other_birthday")
    assert ("already has an account" in page) is (held == "claimed")
    assert ("no prescription has come for this number yet" in page) is (held == "not_held")
    token = csrf_token(staff, "/pharmacist/account-links")
    empty = staff.post(f"/pharmacist/account-links/{link.id}/confirm",
                       data={"csrf_token": token, "note": " "})
    assert empty.status_code == 422
    decided = staff.post(f"/pharmacist/account-links/{link.id}/confirm",
                         data={"csrf_token": token, "note": "photo ID seen at the counter"})
    db.session.expire_all()
    if held == "claimed":
        assert decided.status_code == 409
        assert db.session.get(PatientLinkRequest, link.id).status is LinkStatus.PENDING
        return
    assert decided.status_code == 302
    linked = db.session.get(User, user.id).patient
    assert linked is not None and linked.nhs_number == "9434765919"
    assert (linked.id == record.id) if record is not None else linked.family_name == "Parkes"
    assert client.get("/patient/medicines").status_code == 200
    if waiting is not None:
        old = db.session.get(Notification, waiting.id)
        assert old.failed_at is not None and old.sent_at is None  # not sent to the new account
    assert db.session.scalar(select(Notification).where(
        Notification.user_id == user.id, Notification.kind == "account.link_confirmed"))
    again = staff.post(f"/pharmacist/account-links/{link.id}/refuse",
                       data={"csrf_token": token, "note": "changed my mind"})
    assert again.status_code == 409
    assert {"patient.link_requested", "patient.link_confirmed"} <= set(
        db.session.scalars(select(AuditEvent.action)))


def test_a_deactivated_accounts_link_request_is_refused_with_it(app, client, db) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.models import LinkStatus, PatientLinkRequest, Role
    from pharmacy.services import accounts
    from tests.factories import PharmacyFactory, UserFactory

    PharmacyFactory()
    db.session.commit()
    register_and_confirm(client, db, GOOD)
    user = db.session.scalar(select(User).where(User.email == GOOD["email"]))
    accounts.set_active(db.session, user, False, reason="fraud report", operator="Ops")
    db.session.commit()
    link = db.session.scalar(select(PatientLinkRequest))
    assert link.status is LinkStatus.REFUSED and "fraud report" in link.note
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    from pharmacy.errors import Conflict, DomainError
    from pharmacy.services import patients

    with pytest.raises(DomainError) as refused:
        patients.decide_link(db.session, link.id, confirm=True, note="id seen",
                             pharmacist=pharmacist)
    assert isinstance(refused.value, Conflict)


def test_accounts_asking_for_one_nhs_number_are_shown_together_and_one_link_answers_all(  # type: ignore[no-untyped-def]
        app, client, db) -> None:
    """Anyone can register with a number read off a letter: the pharmacist sees every account
    asking for it (and earlier refusals), and linking one refuses the rest, each told as for
    any refusal."""
    from pharmacy.models import LinkStatus, Notification, PatientLinkRequest, Role
    from tests.factories import DEFAULT_PASSWORD, PatientFactory, PharmacyFactory, UserFactory

    PharmacyFactory()
    PatientFactory(nhs_number=GOOD["nhs_number"].replace(" ", ""), family_name="Parkes",
                   date_of_birth=date(1958, 2, 4))
    pharmacist = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    emails = ["first@example.org", "second@example.org", "third@example.org"]
    for email in emails:
        register_and_confirm(app.test_client(), db, {**GOOD, "email": email})
    links = db.session.scalars(select(PatientLinkRequest).order_by(PatientLinkRequest.id)).all()
    assert [link.nhs_number for link in links] == ["9434765919"] * 3
    staff = app.test_client()
    web_login(staff, pharmacist.email, DEFAULT_PASSWORD)
    token = csrf_token(staff, "/pharmacist/account-links")
    assert staff.post(f"/pharmacist/account-links/{links[2].id}/refuse", data={
        "csrf_token": token, "note": "could not show ID"}).status_code == 302
    page = staff.get("/pharmacist/account-links").get_data(as_text=True)
    assert "1 other account is also asking for this NHS number" in page
    assert "1 earlier request for this NHS number was refused" in page
    assert staff.post(f"/pharmacist/account-links/{links[1].id}/confirm", data={
        "csrf_token": token, "note": "passport seen at the counter"}).status_code == 302
    db.session.expire_all()
    statuses = [db.session.get(PatientLinkRequest, link.id).status for link in links]
    assert statuses == [LinkStatus.REFUSED, LinkStatus.CONFIRMED, LinkStatus.REFUSED]
    first = db.session.get(PatientLinkRequest, links[0].id)
    assert first.decided_by_id == pharmacist.id and "another account was linked" in first.note
    told = db.session.scalars(select(Notification.kind).where(
        Notification.user_id == links[0].user_id)).all()
    assert "account.link_refused" in told
    assert "No account is waiting" in staff.get("/pharmacist/account-links").get_data(
        as_text=True)
    # The first account's request is answered; deciding it again is a conflict, not a 500.
    again = staff.post(f"/pharmacist/account-links/{links[0].id}/confirm", data={
        "csrf_token": token, "note": "x"})
    assert again.status_code == 409


def test_a_link_the_relay_refuses_for_good_drops_the_registration_and_a_not_now_retries(  # type: ignore[no-untyped-def]
        client, db) -> None:
    from unittest import mock

    from pharmacy.jobs.accounts import send_registration_mail
    from pharmacy.models import PendingRegistration
    from pharmacy.services import notify

    PharmacyFactory()
    db.session.commit()
    client.post("/register", data={**GOOD, "nhs_number": "",
                                   "csrf_token": csrf_token(client, "/register")})
    pending_id = db.session.scalar(select(PendingRegistration.id))

    class Relay(CapturingBackend):
        def __init__(self, error: Exception) -> None:
            super().__init__()
            self.error = error

        def send(self, message: object) -> None:
            raise self.error

    with mock.patch("pharmacy.services.notify.backend_from_config",
                    lambda config: Relay(notify.DeliveryDeferred("451 try later"))), \
            pytest.raises(notify.DeliveryDeferred):  # RQ retries the job
        send_registration_mail(pending_id)
    db.session.rollback()
    db.session.expire_all()
    kept = db.session.get(PendingRegistration, pending_id)
    assert kept is not None and kept.token_hash is None  # no link stored for a failed send
    with mock.patch("pharmacy.services.notify.backend_from_config",
                    lambda config: Relay(notify.DeliveryRefused("550 no such user"))):
        assert send_registration_mail(pending_id) is False  # nothing to retry for hours
    db.session.expire_all()
    assert db.session.get(PendingRegistration, pending_id) is None


def test_a_registration_link_takes_a_few_wrong_passwords_then_closes(client, db) -> None:  # type: ignore[no-untyped-def]
    """Whoever holds a leaked link cannot go on guessing the password chosen with it: after
    five wrong ones (counted even though each is refused) the registration goes."""
    from pharmacy.models import PendingRegistration
    from pharmacy.services.patients import CONFIRM_ATTEMPTS

    PharmacyFactory()
    db.session.commit()
    client.post("/register", data={**GOOD, "nhs_number": "",
                                   "csrf_token": csrf_token(client, "/register")})
    (mail,) = registration_mail(db)
    link = re.search(r"(/register/confirm/\S+)", mail.body).group(1)
    assert client.get(link).status_code == 302
    token = csrf_token(client, "/register/confirm")
    for attempt in range(1, CONFIRM_ATTEMPTS):
        wrong = client.post("/register/confirm", data={"csrf_token": token,
                                                       "password": f"guess {attempt}"})
        assert wrong.status_code == 422
        db.session.expire_all()
        assert db.session.scalar(select(PendingRegistration.failed_attempts)) == attempt
    last = client.post("/register/confirm", data={"csrf_token": token, "password": "guess"})
    assert last.status_code == 400 and "no longer works" in last.get_data(as_text=True)
    assert db.session.scalar(select(func.count(PendingRegistration.id))) == 0
    # Even the right password is too late now; the owner registers again.
    assert client.get(link).status_code == 400
    assert db.session.scalar(select(func.count(User.id))) == 0
