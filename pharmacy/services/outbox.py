"""The transactional outbox: jobs are written with the change that needs them, sent after.

``add`` runs inside the caller's transaction, so a job exists exactly when its change was
committed. ``relay`` sends pending rows to RQ (a Redis outage leaves them pending, nothing
is lost); ``reconcile`` finds sent jobs that died with their worker (SIGKILL, lost Redis
data) and sends them again. Each send uses a new job id derived from the row and its attempt
number, and every job is idempotent, so a duplicate never does the work twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.job import Job, JobStatus
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import OutboxMessage
from ..models.base import utcnow

logger = logging.getLogger(__name__)

RUNNER = "pharmacy.jobs.outbox.run_message"


def add(session: Session, *, key: str, function: str, args: Sequence[Any] = (),
        queue: str = "default", job_timeout_s: int = 300) -> OutboxMessage:
    """Record a job to run after this transaction commits (idempotent on ``key``)."""
    existing = session.scalar(select(OutboxMessage).where(OutboxMessage.key == key))
    if existing is not None:
        return existing
    message = OutboxMessage(key=key, function=function, args=list(args), queue=queue,
                            job_timeout_s=job_timeout_s)
    session.add(message)
    session.flush()
    return message


def job_id(message: OutboxMessage) -> str:
    return f"outbox-{message.id}-{message.attempts}"


#: Jobs that send an e-mail holding a link made for it, directly (nothing else keeps the
#: message, so a lost send is a lost link): retried for about two hours, long enough to
#: ride out a mail relay's outage, instead of the default six minutes. (A password-reset
#: link is kept as a notification, which has its own retries.)
MAIL_JOBS = frozenset({"pharmacy.jobs.accounts.send_registration_mail"})


def retry_for(function: str) -> Retry:
    """RQ's retries for a job of this function (seconds between tries)."""
    if function in MAIL_JOBS:
        return Retry(max=7, interval=[10, 60, 300, 600, 1200, 1800, 3600])
    return Retry(max=3, interval=[10, 60, 300])


def relay(session: Session, connection: Redis, *, limit: int = 100) -> int:
    """Send pending messages to RQ. Returns how many were sent; the caller commits."""
    pending = session.scalars(
        select(OutboxMessage).where(OutboxMessage.enqueued_at.is_(None),
                                    OutboxMessage.completed_at.is_(None))
        .order_by(OutboxMessage.id).limit(limit).with_for_update(skip_locked=True)).all()
    sent = 0
    for message in pending:
        try:
            Queue(message.queue, connection=connection).enqueue(
                RUNNER, message.id, job_id=job_id(message), job_timeout=message.job_timeout_s,
                result_ttl=86_400, failure_ttl=7 * 86_400,
                # A job that raised is retried by RQ; one whose worker died, by reconcile.
                retry=retry_for(message.function))
        except RedisError as exc:
            message.last_error = f"redis unavailable: {exc.__class__.__name__}"
            logger.warning("outbox: Redis unavailable; %d message(s) wait", len(pending) - sent)
            break
        message.enqueued_at = utcnow()
        message.last_error = None
        sent += 1
    session.flush()
    return sent


def _dead(job: Job | None, now: datetime, stale_after: timedelta) -> bool:
    if job is None:
        return True  # Redis lost it (restart without persistence, eviction)
    status = job.get_status(refresh=True)
    if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        return True
    if status == JobStatus.STARTED:
        beat = job.last_heartbeat
        if beat is not None and beat.tzinfo is None:
            from datetime import UTC

            beat = beat.replace(tzinfo=UTC)
        return beat is None or now - beat > stale_after
    return False  # queued, deferred, scheduled or finished-but-not-recorded: leave it


def reconcile(session: Session, connection: Redis, *, now: datetime | None = None,
              stale_after: timedelta = timedelta(minutes=2), max_attempts: int = 5) -> int:
    """Re-send messages whose job died. Returns how many were reset for the relay."""
    now = now or utcnow()
    sent = session.scalars(
        select(OutboxMessage).where(OutboxMessage.enqueued_at.is_not(None),
                                    OutboxMessage.completed_at.is_(None),
                                    OutboxMessage.attempts < max_attempts)
        .order_by(OutboxMessage.id).with_for_update(skip_locked=True)).all()
    reset = 0
    for message in sent:
        try:
            job = Job.fetch(job_id(message), connection=connection)
        except RedisError:
            return reset  # Redis is down: nothing to learn now
        except Exception:  # rq raises NoSuchJobError when Redis no longer has it
            job = None
        if _dead(job, now, stale_after):
            message.attempts += 1
            message.enqueued_at = None
            message.last_error = "job died; sending again"
            reset += 1
    session.flush()
    return reset


#: Jobs whose arguments are personal data typed by anyone (an e-mail address asking for a
#: password link): forgotten once the job has run.
FORGET_ARGS = frozenset({"pharmacy.jobs.accounts.send_password_reset"})


def mark_completed(session: Session, message_id: int) -> None:
    message = session.get(OutboxMessage, message_id)
    if message is not None and message.completed_at is None:
        message.completed_at = utcnow()
        if message.function in FORGET_ARGS:
            message.args = []
