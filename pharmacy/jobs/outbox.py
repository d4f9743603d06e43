"""The outbox's job runner and relay jobs."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ..extensions import db, get_redis
from ..models import OutboxMessage
from ..services import outbox

logger = logging.getLogger(__name__)


def run_message(message_id: int) -> Any:
    """RQ entry point for every outbox message: call its function, then mark it done.

    The function commits its own work; marking done afterwards is idempotent, and the
    functions are idempotent too, so a re-sent message (after a lost worker) is harmless.
    """
    message = db.session.get(OutboxMessage, message_id)
    if message is None or message.completed_at is not None:
        return None
    module_name, _, name = message.function.rpartition(".")
    function = getattr(importlib.import_module(module_name), name)
    args = list(message.args)
    db.session.rollback()  # the function opens its own transaction
    result = function(*args)
    outbox.mark_completed(db.session, message_id)
    db.session.commit()
    return result


def relay_outbox() -> int:
    """Periodic safety net: send what the request-time relay could not, re-send dead jobs."""
    connection = get_redis()
    reset = outbox.reconcile(db.session, connection)
    sent = outbox.relay(db.session, connection)
    db.session.commit()
    if reset or sent:
        logger.info("outbox: %d re-sent, %d sent", reset, sent)
    return sent


def relay_now() -> None:
    """After a request commits: send its outbox rows at once (best effort; the periodic
    relay catches up if Redis is down)."""
    try:
        outbox.relay(db.session, get_redis())
        db.session.commit()
    except Exception:
        db.session.rollback()
        logger.warning("outbox relay after commit failed; the periodic relay will retry",
                       exc_info=True)
