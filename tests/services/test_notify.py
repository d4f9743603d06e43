"""Notifications: templates, backends (console, SMTP against a stand-in), sending, reminders,
and the jobs through a real RQ worker."""

from __future__ import annotations

import email
import logging
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from rq import Queue
from sqlalchemy import select
from sqlalchemy.orm import Session

from config import ConfigError
from pharmacy.jobs import DEFAULT_QUEUE
from pharmacy.jobs.reminders import queue_repeat_reminders, send_notifications
from pharmacy.models import Notification, Role, User
from pharmacy.services.notify import (
    ConsoleBackend,
    DeliveryRefused,
    OutgoingMessage,
    SMTPBackend,
    backend_from_config,
    create_notification,
    create_repeat_reminders,
    render_notification,
    send_pending,
)
from tests.factories import PatientFactory, UserFactory

from .conftest import SMTPStandIn
from .rx_data import patient_with_account, repeat_prescription

ROOT = Path(__file__).resolve().parents[2]
# A 28-day supply dispensed on 1 Nov may be re-ordered from 22 Nov (7 days before 29 Nov).
DISPENSED = date(2026, 11, 1)
ORDERABLE = date(2026, 11, 22)


def test_templates_give_subject_and_body_without_medicine_names() -> None:
    subject, body = render_notification("repeat.due", given_name="Ann",
                                        runs_out="29 November 2026")
    assert subject == "A repeat medicine can now be ordered"
    assert body.startswith("Hello Ann,\n\nOne of your repeat medicines")
    assert "29 November 2026" in body and body.endswith("Dispensary\n")
    subject, body = render_notification("delivery.coming", given_name="Ann",
                                        reference="D-1234", window="today between 2 and 4 pm")
    assert subject == "Your Dispensary delivery is coming today between 2 and 4 pm"
    assert "D-1234" in body
    with pytest.raises(Exception, match="runs_out"):  # StrictUndefined: no silent blanks
        render_notification("repeat.due", given_name="Ann")
    with pytest.raises(ValueError):
        render_notification("../../base.html")


def test_backends_come_from_config() -> None:
    assert isinstance(backend_from_config({}), ConsoleBackend)
    smtp = backend_from_config({"NOTIFY_BACKEND": "smtp", "SMTP_HOST": "mail.example.org",
                                "SMTP_PORT": "2525", "SMTP_FROM": "Rx <rx@example.org>",
                                "SMTP_STARTTLS": "true"})
    assert isinstance(smtp, SMTPBackend)
    assert (smtp.host, smtp.port, smtp.sender) == ("mail.example.org", 2525, "Rx <rx@example.org>")
    with pytest.raises(ConfigError):
        backend_from_config({"NOTIFY_BACKEND": "pigeon"})
    with pytest.raises(ConfigError):
        backend_from_config({"NOTIFY_BACKEND": "smtp", "SMTP_PORT": "twenty-five"})


def _notification(session: Session, **recipient: object) -> Notification:
    row = Notification(kind="test.kind", subject="Subject", body="Body\n", **recipient)
    session.add(row)
    session.flush()
    return row


class _FlakyBackend(ConsoleBackend):
    """Refuses one message and then breaks down."""

    name = "flaky"

    def __init__(self, refuse: int, break_at: int) -> None:
        super().__init__()
        self.refuse, self.break_at = refuse, break_at

    def send(self, message: OutgoingMessage) -> None:
        if message.notification_id == self.refuse:
            raise DeliveryRefused("550 no such user")
        if message.notification_id == self.break_at:
            raise ConnectionResetError("relay went away")
        super().send(message)


def test_console_sends_each_reachable_row_once_and_logs_ids_only(db, caplog, database_url) -> None:  # type: ignore[no-untyped-def]
    patient = patient_with_account()
    staff = UserFactory(role="pharmacist")
    no_account = PatientFactory()
    to_patient = _notification(db.session, patient_id=patient.id, user_id=patient.user_id)
    to_staff = _notification(db.session, user_id=staff.id)
    unreachable = _notification(db.session, patient_id=no_account.id)
    already = _notification(db.session, user_id=staff.id)
    already.sent_at = datetime(2026, 11, 1, tzinfo=UTC)
    db.session.commit()

    backend = ConsoleBackend()
    with caplog.at_level(logging.INFO, logger="pharmacy.services.notify"):
        assert send_pending(db.session, backend) == 2
    db.session.commit()
    assert backend.sent == [to_patient.id, to_staff.id]
    lines = [r.getMessage() for r in caplog.records if "delivered to console" in r.getMessage()]
    assert lines[0].startswith(f"notification {to_patient.id} kind=test.kind channel=email")
    assert not any("@" in line or "Subject" in line for line in lines)
    assert send_pending(db.session, backend) == 0  # idempotent: nothing left to send
    assert db.session.get(Notification, unreachable.id).sent_at is None  # type: ignore[union-attr]

    # Two runs at once never take the same row: a locked row is skipped, not waited for.
    fresh = _notification(db.session, user_id=staff.id)
    db.session.commit()
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    with Session(engine) as other:
        other.scalars(select(Notification).where(Notification.id == fresh.id)
                      .with_for_update()).all()
        assert send_pending(db.session, backend) == 0
        db.session.rollback()
    engine.dispose()
    assert send_pending(db.session, backend) == 1
    db.session.commit()

    # A refused message stays unsent; a backend that breaks stops the run, keeping the rest.
    rows = [_notification(db.session, user_id=staff.id) for _ in range(4)]
    db.session.commit()
    assert send_pending(db.session, _FlakyBackend(refuse=rows[0].id, break_at=rows[2].id)) == 1
    db.session.commit()
    assert [r.sent_at is not None for r in rows] == [False, True, False, False]
    assert send_pending(db.session, ConsoleBackend()) == 2  # the refused one waits its turn
    db.session.refresh(rows[0])
    assert (rows[0].attempts, rows[0].last_error) == (1, "550 no such user")
    later = rows[0].next_attempt_at + timedelta(seconds=1)
    assert send_pending(db.session, ConsoleBackend(), now=later) == 1


class _Recorder(ConsoleBackend):
    def __init__(self) -> None:
        super().__init__()
        self.opened = 0

    def open(self) -> None:
        self.opened += 1


def test_a_relay_saying_not_now_never_makes_a_message_give_up(  # type: ignore[no-untyped-def]
        db, smtp_server: SMTPStandIn) -> None:
    from pharmacy.services.notify import MAX_ATTEMPTS

    patient = patient_with_account()
    row = _notification(db.session, user_id=patient.user_id)
    db.session.commit()
    address = db.session.get(User, patient.user_id).email  # type: ignore[union-attr]
    smtp_server.defer_recipients.add(address)
    backend = backend_from_config({"NOTIFY_BACKEND": "smtp", "SMTP_HOST": smtp_server.host,
                                   "SMTP_PORT": smtp_server.port,
                                   "SMTP_FROM": "rx@dispensary.example"})
    when = datetime.now(UTC)
    for _ in range(MAX_ATTEMPTS + 2):  # throttled for longer than the give-up point
        assert send_pending(db.session, backend, now=when) == 0
        db.session.refresh(row)
        assert row.attempts == 0 and row.failed_at is None and "451" in row.last_error
        when = row.next_attempt_at + timedelta(seconds=1)
    smtp_server.defer_recipients.clear()
    assert send_pending(db.session, backend, now=when) == 1
    assert [m["to"] for m in smtp_server.messages] == [[address]]


def test_a_bad_address_is_tried_a_few_times_and_never_holds_up_the_rest(  # type: ignore[no-untyped-def]
        db, smtp_server: SMTPStandIn) -> None:
    from pharmacy.services.notify import MAX_ATTEMPTS

    good = [patient_with_account() for _ in range(2)]
    bad = [UserFactory(role=Role.PATIENT) for _ in range(2)]
    bad[0].email = "ann@example.org\r\nBcc: all@example.org"  # a header injection
    bad[1].email = "zoë@exämple.org"  # the stand-in relay has no SMTPUTF8
    db.session.flush()
    first = [_notification(db.session, user_id=u.id) for u in bad]
    rest = [_notification(db.session, user_id=p.user_id) for p in good]
    db.session.commit()
    backend = backend_from_config({"NOTIFY_BACKEND": "smtp", "SMTP_HOST": smtp_server.host,
                                   "SMTP_PORT": smtp_server.port,
                                   "SMTP_FROM": "rx@dispensary.example"})
    assert send_pending(db.session, backend) == 2
    assert len(smtp_server.messages) == 2
    when = datetime.now(UTC)
    for _ in range(2, MAX_ATTEMPTS + 1):
        db.session.expire_all()
        when = max(r.next_attempt_at for r in (db.session.get(Notification, n.id)
                                              for n in first)) + timedelta(seconds=1)
        assert send_pending(db.session, backend, now=when) == 0
    db.session.expire_all()
    for row in (db.session.get(Notification, n.id) for n in first):
        assert row.attempts == MAX_ATTEMPTS and row.failed_at is not None
        assert row.sent_at is None and row.last_error
    recorder = _Recorder()
    assert send_pending(db.session, recorder, now=when + timedelta(days=1)) == 0
    assert recorder.opened == 0  # given up: not even a connection for them
    assert len(smtp_server.messages) == 2 and all(
        db.session.get(Notification, n.id).sent_at for n in rest)


def test_smtp_delivers_mail_and_failures_stay_unsent(db, smtp_server: SMTPStandIn) -> None:  # type: ignore[no-untyped-def]
    people = [patient_with_account() for _ in range(3)]
    rows = [create_notification(db.session, kind="repeat.due", patient=p, given_name="Ann",
                                runs_out="1 December 2026") for p in people]
    assert all(rows)
    sms = _notification(db.session, user_id=people[0].user_id)
    sms.channel = "sms"  # not for the e-mail backend
    emails = [db.session.get(User, p.user_id).email for p in people]  # type: ignore[union-attr]
    smtp_server.reject_recipients.add(emails[1])
    db.session.commit()

    backend = backend_from_config({"NOTIFY_BACKEND": "smtp", "SMTP_HOST": smtp_server.host,
                                   "SMTP_PORT": smtp_server.port,
                                   "SMTP_FROM": "Dispensary <rx@dispensary.example>"})
    assert send_pending(db.session, backend) == 2
    db.session.commit()
    assert [m["to"] for m in smtp_server.messages] == [[emails[0]], [emails[2]]]
    mail = email.message_from_string(smtp_server.messages[0]["data"])
    assert mail["Subject"] == "A repeat medicine can now be ordered"
    assert mail["From"] == "Dispensary <rx@dispensary.example>"
    assert mail["Message-ID"] == f"<notification-{rows[0].id}@dispensary.example>"  # type: ignore[union-attr]
    assert "1 December 2026" in mail.get_payload(decode=True).decode()
    sent = {r.id: r.sent_at is not None for r in db.session.scalars(select(Notification))}
    assert sent == {rows[0].id: True, rows[1].id: False, rows[2].id: True,  # type: ignore[union-attr]
                    sms.id: False}

    # The refused one is tried again next run (and refused again); nothing is sent twice.
    assert send_pending(db.session, backend) == 0
    assert len(smtp_server.messages) == 2

    # A relay that is down: nothing sent, nothing marked.
    smtp_server.reject_recipients.clear()
    down = SMTPBackend(host="127.0.0.1", port=9, sender="rx@dispensary.example", timeout_s=1)
    assert send_pending(db.session, down) == 0
    assert db.session.get(Notification, rows[1].id).sent_at is None  # type: ignore[union-attr]


def test_repeat_reminders_once_per_patient_and_due_date(db) -> None:  # type: ignore[no-untyped-def]
    patient = patient_with_account(given_name="Ann")
    rx = repeat_prescription(db.session, patient, [
        {"name": "Amlodipine 5mg tablets", "dosage": "one daily"},
        {"name": "Simvastatin 40mg tablets", "dosage": "one at night"}],
        dispensed_on=DISPENSED)
    # Not orderable yet (dispensed later), and a patient with no account to write to.
    repeat_prescription(db.session, patient, [{"name": "Later", "dosage": "one daily"}],
                        dispensed_on=DISPENSED + timedelta(days=10))
    no_account = PatientFactory()
    repeat_prescription(db.session, no_account, [{"name": "X", "dosage": "one daily"}],
                        dispensed_on=DISPENSED)
    db.session.commit()

    assert create_repeat_reminders(db.session, ORDERABLE - timedelta(days=1)) == 0
    assert create_repeat_reminders(db.session, ORDERABLE) == 1  # two items, one message
    assert create_repeat_reminders(db.session, ORDERABLE) == 0
    # The next day's run (or a missed run caught up) finds them already reminded.
    assert create_repeat_reminders(db.session, ORDERABLE + timedelta(days=2)) == 0
    db.session.commit()
    rows = db.session.scalars(select(Notification).order_by(Notification.id)).all()
    assert [r.dedupe_key for r in rows] == [
        f"repeat-due:patient-{patient.id}:{ORDERABLE.isoformat()}"]
    assert len(rx.items) == 2
    assert {(r.kind, r.patient_id, r.user_id, r.channel) for r in rows} == {
        ("repeat.due", patient.id, patient.user_id, "email")}
    assert "Amlodipine" not in rows[0].body
    assert "28 November 2026" in rows[0].body  # the last day the supply covers

    # A missed daily run is caught up for three days, through the job function (it commits).
    late = patient_with_account()
    repeat_prescription(db.session, late, [{"name": "A", "dosage": "one daily"}],
                        dispensed_on=DISPENSED + timedelta(days=1))
    db.session.commit()
    assert create_repeat_reminders(db.session, ORDERABLE + timedelta(days=4)) == 0  # too late
    assert queue_repeat_reminders((ORDERABLE + timedelta(days=3)).isoformat()) == 1
    db.session.expire_all()
    assert db.session.scalars(select(Notification.patient_id).order_by(
        Notification.id.desc())).first() == late.id


def test_a_reminder_sent_under_the_old_per_item_key_is_not_sent_again(db) -> None:  # type: ignore[no-untyped-def]
    patient = patient_with_account()
    rx = repeat_prescription(db.session, patient, [{"name": "A", "dosage": "one daily"}],
                             dispensed_on=DISPENSED)
    db.session.add(Notification(patient_id=patient.id, user_id=patient.user_id,
                                kind="repeat.due", subject="s", body="b\n",
                                dedupe_key=f"repeat-due:{rx.items[0].id}:{ORDERABLE}"))
    db.session.commit()
    assert create_repeat_reminders(db.session, ORDERABLE + timedelta(days=1)) == 0


def test_one_patients_bad_record_does_not_stop_the_others_reminders(  # type: ignore[no-untyped-def]
        db, monkeypatch) -> None:
    from pharmacy.services import prescriptions

    broken, fine = patient_with_account(), patient_with_account()
    for patient in (broken, fine):
        repeat_prescription(db.session, patient, [{"name": "A", "dosage": "one daily"}],
                            dispensed_on=DISPENSED)
    db.session.commit()
    real = prescriptions.my_medicines

    def my_medicines(session, patient, today):  # type: ignore[no-untyped-def]
        if patient.id == broken.id:
            raise ValueError("a stored bundle that no longer parses")
        return real(session, patient, today)

    monkeypatch.setattr(prescriptions, "my_medicines", my_medicines)
    assert create_repeat_reminders(db.session, ORDERABLE) == 1
    db.session.commit()
    assert db.session.scalars(select(Notification.patient_id)).all() == [fine.id]


def test_the_jobs_run_in_a_real_worker_from_real_redis(
    app: Flask, db, redis, database_url: str, redis_url: str  # type: ignore[no-untyped-def]
) -> None:
    patient = patient_with_account()
    repeat_prescription(db.session, patient, [{"name": "A", "dosage": "one daily"}],
                        dispensed_on=DISPENSED)
    db.session.commit()

    queue = Queue(DEFAULT_QUEUE, connection=redis)
    remind = queue.enqueue(queue_repeat_reminders, ORDERABLE.isoformat(), job_timeout=60)
    send = queue.enqueue(send_notifications, job_timeout=60, depends_on=remind)
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "DISPENSARY_ENV": "testing"}
    done = subprocess.run([sys.executable, "-m", "pharmacy.worker", "--burst", DEFAULT_QUEUE],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    remind.refresh()
    send.refresh()
    assert (remind.get_status(), send.get_status()) == ("finished", "finished"), done.stdout
    assert (remind.return_value(), send.return_value()) == (1, 1)
    db.session.expire_all()
    row = db.session.scalars(select(Notification)).one()
    assert row.sent_at is not None
    assert f"notification {row.id} kind=repeat.due" in done.stdout
    # The worker's JSON log lines carry the job id.
    assert f'"job_id": "{send.id}"' in done.stdout


def test_the_schedule_declares_both_jobs(redis) -> None:  # type: ignore[no-untyped-def]
    from rq.cron import CronScheduler

    scheduler = CronScheduler(connection=redis)
    scheduler.load_config_from_file("pharmacy.jobs.schedule")  # as `rq cron` is run
    jobs = {job.name: (job.func, job.cron, job.queue_name) for job in scheduler.get_jobs()}
    assert jobs["repeat-reminders"] == (queue_repeat_reminders, "0 7 * * *", DEFAULT_QUEUE)
    assert jobs["send-notifications"] == (send_notifications, "*/5 * * * *", DEFAULT_QUEUE)
