"""Account jobs: messages about an account, written and sent at once, off the request that
asked (so that the page answers alike, and as fast, whether or not the address has one)."""

from __future__ import annotations

from collections.abc import Callable

from flask import current_app
from sqlalchemy.orm import Session

from ..extensions import db
from ..services import accounts, notify, patients


def _write_and_send(write: Callable[..., int | None], email: str) -> bool:
    """Write the message (``write`` returns its id, or None for no message), commit, and
    send it ahead of the queue: the links in these messages expire."""
    config = current_app.config
    session: Session = db.session
    row_id = write(session, email, secret_key=config["SECRET_KEY"],
                   base_url=config["PUBLIC_BASE_URL"])
    session.commit()
    if row_id is not None:
        notify.send_pending(session, notify.backend_from_config(config), only_ids=[row_id])
    return row_id is not None


def send_password_reset(email: str) -> bool:
    """RQ entry point (through the outbox): the link to choose a new password, if ``email``
    is an open account's. Safe to run twice (one link per quarter hour).

    Returns:
        Whether a link was written.
    """
    return _write_and_send(accounts.request_password_reset, email)


def send_registration_mail(email: str) -> bool:
    """RQ entry point (through the outbox): after a registration (or a sign-in before the
    address was confirmed), a link to confirm a new account, or a note that the address
    already has one.

    Returns:
        Whether a message was written.
    """
    return _write_and_send(patients.registration_mail, email)
