"""Reminder and notification jobs (RQ entry points; run in the worker's app context)."""

from __future__ import annotations

import logging
from datetime import date

from flask import current_app

from ..extensions import db
from ..models.base import utcnow
from ..services import notify
from ..services.prescriptions import LONDON

logger = logging.getLogger(__name__)


def queue_repeat_reminders(day_iso: str | None = None) -> int:
    """Write one reminder per repeat item that became orderable on the day (London date).

    Safe to run any number of times: reminders are keyed by item and date.

    Returns:
        How many notifications were created.
    """
    day = date.fromisoformat(day_iso) if day_iso else utcnow().astimezone(LONDON).date()
    created = notify.create_repeat_reminders(db.session, day)
    db.session.commit()
    return created


def send_notifications() -> int:
    """Deliver unsent notifications through the configured backend (NOTIFY_BACKEND).

    Returns:
        How many were sent.
    """
    backend = notify.backend_from_config(current_app.config)
    return notify.send_pending(db.session, backend)  # commits message by message
