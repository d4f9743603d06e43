"""Account jobs."""

from __future__ import annotations

from flask import current_app

from ..extensions import db
from ..services import accounts, notify


def send_password_reset(email: str) -> bool:
    """RQ entry point (through the outbox): write and send at once the link to choose a new
    password, if ``email`` is an open account's. The page that asked answered before this
    ran, the same whatever this finds. Safe to run twice (one link per quarter hour).

    Returns:
        Whether a link was written.
    """
    config = current_app.config
    row_id = accounts.request_password_reset(
        db.session, email, secret_key=config["SECRET_KEY"], base_url=config["PUBLIC_BASE_URL"])
    db.session.commit()
    if row_id is not None:  # ahead of the queue: the link only works for an hour
        notify.send_pending(db.session, notify.backend_from_config(config), only_ids=[row_id])
    return row_id is not None
