"""Notifications: writing them from templates, and delivering them through a backend.

A ``Notification`` row is written in the same transaction as the change it reports; a
periodic job (``pharmacy.jobs.reminders.send_notifications``) hands unsent rows to the
configured backend and stamps ``sent_at``. A failed delivery leaves the row unsent for the
next run. Delivery is at-least-once: a crash between sending and committing sends again
(the Message-ID is fixed per notification, so mail clients can fold duplicates).

Backends: ``console`` (development; logs ids only) and ``smtp`` (e-mail via smtplib).
Templates: ``pharmacy/templates/notifications/<kind>.txt``, a ``Subject:`` line, a blank
line, then the body. Bodies never name medicines: e-mail is not a private channel.
"""

from __future__ import annotations

import functools
import logging
import re
import smtplib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config import ConfigError, parse_bool

from ..models import Notification, PatientProfile, Prescription, PrescriptionStatus, User
from ..models.base import utcnow

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "notifications"
EMAIL = "email"
SEND_BATCH = 100
# A refused message: tried again after 10, 20, 40, 80 minutes, then given up (the fifth).
MAX_ATTEMPTS = 5
RETRY_AFTER = timedelta(minutes=10)
DEFAULT_SENDER = "Dispensary <no-reply@localhost>"
REMINDER_CATCH_UP_DAYS = 3  # a missed daily run still reminds, once, for this long


# --- templates -------------------------------------------------------------------------------

@functools.cache
def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=False,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True)


_KIND = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


def render_notification(kind: str, **context: Any) -> tuple[str, str]:
    """The subject and body for a notification of ``kind`` (e.g. "repeat.due").

    Raises:
        ValueError: no such template, or it lacks its ``Subject:`` line.
    """
    if not _KIND.fullmatch(kind):
        raise ValueError(f"not a notification kind: {kind!r}")
    text = _environment().get_template(f"{kind}.txt").render(**context)
    first, _, body = text.partition("\n")
    if not first.startswith("Subject:"):
        raise ValueError(f"notification template {kind} must start with a Subject: line")
    subject = first.removeprefix("Subject:").strip()
    return subject[:200], body.strip() + "\n"


def quarter_hour(now: datetime) -> str:
    """The quarter hour ``now`` falls in, for a dedupe key: at most one such message per
    account per quarter hour (no one floods an inbox by asking again and again)."""
    return f"{now:%Y%m%d%H}-{now.minute // 15}"


def create_notification(session: Session, *, kind: str, patient: PatientProfile | None = None,
                        user_id: int | None = None, dedupe_key: str | None = None,
                        channel: str = EMAIL, **context: Any) -> Notification | None:
    """Write a notification from its template; None if ``dedupe_key`` was already used.

    The recipient is the patient (and their account, when they have one) or the user.
    """
    if patient is None and user_id is None:
        raise ValueError("a notification needs a patient or a user")
    if dedupe_key is not None and session.scalar(
            select(Notification.id).where(Notification.dedupe_key == dedupe_key)) is not None:
        return None
    subject, body = render_notification(kind, **context)
    if user_id is None and patient is not None:
        user_id = patient.user_id
    row = Notification(patient_id=patient.id if patient else None, user_id=user_id,
                       kind=kind, dedupe_key=dedupe_key, channel=channel, subject=subject,
                       body=body)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        if dedupe_key is None:
            raise
        return None  # another run wrote it a moment ago
    return row


# --- backends --------------------------------------------------------------------------------

@dataclass(frozen=True)
class OutgoingMessage:
    notification_id: int
    kind: str
    channel: str
    to: str
    subject: str
    body: str
    user_id: int | None
    patient_id: int | None


class DeliveryRefused(Exception):
    """This one message could not be delivered (bad address, refused); others may be."""


class DeliveryDeferred(DeliveryRefused):
    """The relay said "not now" (a 4xx: greylisting, throttling, a full mailbox): tried
    again later without counting towards giving up."""


class NotificationBackend(Protocol):
    """Delivers messages. ``send`` raises DeliveryRefused for a failure of that message
    only; any other exception means the backend is unusable and the run stops."""

    name: str
    channels: frozenset[str] | None   # None: every channel

    def open(self) -> None: ...

    def send(self, message: OutgoingMessage) -> None: ...

    def close(self) -> None: ...


class ConsoleBackend:
    """Development: one log line per message, ids only (no address, subject or body); with
    ``show_text`` (the local demo only, never production or tests), the subject and body
    too, so that a link to confirm an account or reset a password can be followed."""

    name = "console"
    channels: frozenset[str] | None = None

    def __init__(self, *, show_text: bool = False) -> None:
        self.sent: list[int] = []
        self.show_text = show_text

    def open(self) -> None:
        return None

    def send(self, message: OutgoingMessage) -> None:
        logger.info("notification %s kind=%s channel=%s user=%s patient=%s delivered to console",
                    message.notification_id, message.kind, message.channel, message.user_id,
                    message.patient_id)
        if self.show_text:
            print(f"--- e-mail {message.notification_id}: {message.subject}\n{message.body}"
                  "--- end of e-mail", flush=True)
        self.sent.append(message.notification_id)

    def close(self) -> None:
        return None


class SMTPBackend:
    """E-mail through an SMTP relay; one connection per run."""

    name = "smtp"
    channels: frozenset[str] | None = frozenset({EMAIL})

    def __init__(self, *, host: str, port: int, sender: str, username: str = "",
                 password: str = "", starttls: bool = False, timeout_s: float = 10.0) -> None:
        self.host, self.port, self.sender = host, port, sender
        self._username, self._password = username, password
        self._starttls, self._timeout_s = starttls, timeout_s
        self._domain = parseaddr(sender)[1].rpartition("@")[2] or "dispensary.invalid"
        self._connection: smtplib.SMTP | None = None

    def open(self) -> None:
        connection = smtplib.SMTP(self.host, self.port, timeout=self._timeout_s)
        try:
            if self._starttls:
                connection.starttls()
            if self._username:
                connection.login(self._username, self._password)
        except Exception:
            connection.close()
            raise
        self._connection = connection

    def send(self, message: OutgoingMessage) -> None:
        if self._connection is None:
            raise RuntimeError("SMTPBackend.send before open")
        try:
            mail = EmailMessage()
            mail["From"] = self.sender
            mail["To"] = message.to  # a line break in an address is refused here
            mail["Subject"] = message.subject
            mail["Date"] = format_datetime(utcnow())
            # Fixed per notification: a resend after a crash is recognisably the same message.
            # Fixed per stored notification (a resend folds into it); a message sent without
            # a row (a registration's link) gets its own.
            mail["Message-ID"] = (f"<notification-{message.notification_id}@{self._domain}>"
                                  if message.notification_id else
                                  make_msgid(domain=self._domain))
            mail.set_content(message.body)
            self._connection.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(400 <= code < 500 for code in codes):
                raise DeliveryDeferred(f"{type(exc).__name__} {codes[0]}") from exc
            raise DeliveryRefused(f"{type(exc).__name__} {codes[0] if codes else ''}") from exc
        except smtplib.SMTPDataError as exc:
            if 400 <= exc.smtp_code < 500:
                raise DeliveryDeferred(f"{type(exc).__name__} {exc.smtp_code}") from exc
            raise DeliveryRefused(f"{type(exc).__name__} {exc.smtp_code}") from exc
        except (smtplib.SMTPNotSupportedError, ValueError, UnicodeError) as exc:
            # This message cannot go (a bad or non-ASCII address the relay cannot take); the
            # relay itself is fine, so the others still go.
            raise DeliveryRefused(type(exc).__name__) from exc

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            connection.quit()
        except smtplib.SMTPException:
            connection.close()


def backend_from_config(config: Mapping[str, Any]) -> NotificationBackend:
    """The backend named by ``NOTIFY_BACKEND`` (default ``console``).

    SMTP settings: SMTP_HOST (localhost), SMTP_PORT (25), SMTP_FROM, SMTP_USERNAME,
    SMTP_PASSWORD, SMTP_STARTTLS (false).

    Raises:
        ConfigError: an unknown backend or an unreadable port.
    """
    name = str(config.get("NOTIFY_BACKEND") or "console").strip().lower()
    if name == "console":
        return ConsoleBackend(show_text=bool(config.get("NOTIFY_CONSOLE_SHOW_TEXT")))
    if name == "smtp":
        try:
            port = int(config.get("SMTP_PORT") or 25)
        except (TypeError, ValueError):
            raise ConfigError(f"SMTP_PORT must be an integer, got {config.get('SMTP_PORT')!r}"
                              ) from None
        starttls = config.get("SMTP_STARTTLS", False)
        if isinstance(starttls, str):
            starttls = parse_bool("SMTP_STARTTLS", starttls)
        return SMTPBackend(host=str(config.get("SMTP_HOST") or "localhost"), port=port,
                           sender=str(config.get("SMTP_FROM") or DEFAULT_SENDER),
                           username=str(config.get("SMTP_USERNAME") or ""),
                           password=str(config.get("SMTP_PASSWORD") or ""),
                           starttls=bool(starttls))
    raise ConfigError(f"NOTIFY_BACKEND must be console or smtp, got {name!r}")


# --- sending ---------------------------------------------------------------------------------

def send_pending(session: Session, backend: NotificationBackend, *, limit: int = SEND_BATCH,
                 now: datetime | None = None, only_ids: Collection[int] | None = None) -> int:
    """Deliver unsent notifications (oldest first, up to ``limit``) and stamp ``sent_at``.

    Each message is its own transaction: locked with SKIP LOCKED (two runs at once never
    take the same row), sent, stamped and committed before the next is taken, so a worker
    killed mid-run sends again at most the one message it was on. Only rows whose
    recipient has an active account are picked (the e-mail address lives on the account);
    the rest wait until there is one. A message the relay refuses is tried again after
    ``RETRY_AFTER`` × 2^(tries − 1) and given up after ``MAX_ATTEMPTS`` tries (it never
    holds up the rest); if the backend itself fails the run stops, keeping what was sent.

    Returns:
        How many were sent.
    """
    recipient = func.coalesce(Notification.user_id, PatientProfile.user_id)
    opened = False
    sent = tried = 0
    try:
        while tried < limit:
            moment = now or utcnow()
            stmt = (select(Notification, User.email)
                    .outerjoin(PatientProfile, PatientProfile.id == Notification.patient_id)
                    .join(User, User.id == recipient)
                    .where(Notification.sent_at.is_(None), Notification.failed_at.is_(None),
                           or_(Notification.next_attempt_at.is_(None),
                               Notification.next_attempt_at <= moment),
                           User.is_active.is_(True))
                    .order_by(Notification.id)
                    .limit(1)
                    .with_for_update(of=Notification, skip_locked=True))
            if backend.channels is not None:
                stmt = stmt.where(Notification.channel.in_(sorted(backend.channels)))
            if only_ids is not None:  # these now, ahead of the queue (a password link)
                stmt = stmt.where(Notification.id.in_(sorted(only_ids)))
            found = session.execute(stmt).first()
            if found is None:
                break
            row, email = found
            tried += 1
            if not opened:
                try:
                    backend.open()
                except Exception as exc:
                    logger.error("notification backend %s unavailable: %s", backend.name,
                                 type(exc).__name__)
                    session.rollback()
                    return 0
                opened = True
            message = OutgoingMessage(row.id, row.kind, row.channel, email, row.subject,
                                      row.body, row.user_id, row.patient_id)
            try:
                backend.send(message)
            except DeliveryDeferred as exc:
                row.last_error = str(exc)[:100]
                row.next_attempt_at = moment + RETRY_AFTER  # not a try that counts
                session.commit()
                continue
            except DeliveryRefused as exc:
                _refused(row, str(exc), moment)
                session.commit()
                continue
            except Exception as exc:
                logger.error("notification backend %s failed at notification %s: %s; "
                             "stopping this run", backend.name, row.id, type(exc).__name__)
                session.rollback()
                break
            row.sent_at = moment
            session.commit()
            sent += 1
    finally:
        if opened:
            try:
                backend.close()
            except Exception as exc:  # the messages went; a failed goodbye changes nothing
                logger.warning("closing notification backend %s: %s", backend.name,
                               type(exc).__name__)
    if tried:
        logger.info("sent %d of %d notifications via %s", sent, tried, backend.name)
    return sent


def _refused(row: Notification, reason: str, now: datetime) -> None:
    row.attempts = (row.attempts or 0) + 1
    row.last_error = reason[:100]
    if row.attempts >= MAX_ATTEMPTS:
        row.failed_at = now
        logger.warning("notification %s refused %d times (%s); given up", row.id,
                       row.attempts, row.last_error)
    else:
        row.next_attempt_at = now + RETRY_AFTER * 2 ** (row.attempts - 1)
        logger.warning("notification %s not delivered (%s); trying again after %s", row.id,
                       row.last_error, row.next_attempt_at.isoformat())


# --- repeat reminders ------------------------------------------------------------------------

def repeat_due_key(patient_id: int, orderable_from: date) -> str:
    """One reminder per patient per date items became orderable, however often the job
    runs."""
    return f"repeat-due:patient-{patient_id}:{orderable_from.isoformat()}"


def create_repeat_reminders(session: Session, day: date, *,
                            catch_up_days: int = REMINDER_CATCH_UP_DAYS) -> int:
    """Remind patients of repeat items that became orderable on ``day``.

    Items that became orderable in the ``catch_up_days`` before are included too, so a
    missed run still reminds; the dedupe key makes each reminder happen once. Patients
    without an active account are skipped (there is no address to write to).

    Returns:
        How many notifications were created.
    """
    patients = session.scalars(
        select(PatientProfile)
        .join(User, User.id == PatientProfile.user_id)
        .where(User.is_active.is_(True),
               select(Prescription.id).where(
                   Prescription.patient_id == PatientProfile.id,
                   Prescription.original_id.is_(None),
                   Prescription.prescription_type == "repeat",
                   Prescription.status.notin_([PrescriptionStatus.REJECTED,
                                               PrescriptionStatus.CANCELLED])).exists())
        .order_by(PatientProfile.id)
    ).all()
    oldest = day - timedelta(days=catch_up_days)
    created = 0
    for patient in patients:
        try:
            # One patient's bad data (a stored bundle that no longer parses) must not
            # cancel everyone else's reminders.
            with session.begin_nested():
                created += _remind(session, patient, day, oldest)
        except Exception:
            logger.exception("repeat reminders for patient %s failed; the others go on",
                             patient.id)
    logger.info("repeat reminders for %s: %d created", day.isoformat(), created)
    return created


def _remind(session: Session, patient: PatientProfile, day: date, oldest: date) -> int:
    """One reminder per day on which some of the patient's items became orderable (items
    of one repeat batch due together are one message, not one each)."""
    from .prescriptions import REPEAT_LEAD_DAYS, my_medicines

    due: dict[date, list[int]] = {}
    for status in my_medicines(session, patient, day):
        if status.can_order and status.earliest is not None and oldest < status.earliest <= day:
            due.setdefault(status.earliest, []).append(status.item.id)
    created = 0
    for earliest, item_ids in sorted(due.items()):
        # Reminders written before they were per patient were keyed per item.
        earlier = [f"repeat-due:{item_id}:{earliest.isoformat()}" for item_id in item_ids]
        if session.scalar(select(Notification.id).where(
                Notification.dedupe_key.in_(earlier)).limit(1)) is not None:
            continue
        # The last day the current supply covers (it is due the day after).
        last_day = earliest + timedelta(days=REPEAT_LEAD_DAYS - 1)
        row = create_notification(
            session, kind="repeat.due", patient=patient,
            dedupe_key=repeat_due_key(patient.id, earliest),
            given_name=patient.given_name, runs_out=f"{last_day:%-d %B %Y}")
        if row is not None:
            created += 1
    return created
