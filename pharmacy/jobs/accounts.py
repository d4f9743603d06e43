"""Account jobs: messages about an account, written and sent at once, off the request that
asked (so that the page answers alike, and as fast, whether or not the address has one)."""

from __future__ import annotations

from flask import current_app
from sqlalchemy.orm import Session

from ..extensions import db
from ..services import accounts, notify, patients


def send_password_reset(email: str) -> bool:
    """RQ entry point (through the outbox): the link to choose a new password, if ``email``
    is an open account's, written and sent at once, ahead of the queue (the link expires).
    Safe to run twice (one link per quarter hour).

    Returns:
        Whether a link was written.
    """
    config = current_app.config
    session: Session = db.session
    row_id = accounts.request_password_reset(session, email, secret_key=config["SECRET_KEY"],
                                             base_url=config["PUBLIC_BASE_URL"])
    session.commit()
    if row_id is not None:
        notify.send_pending(session, notify.backend_from_config(config), only_ids=[row_id])
    return row_id is not None


def send_registration_mail(pending_id: int) -> bool:
    """RQ entry point (through the outbox): after a registration, e-mail its address at
    once: a link to confirm it, or a note that the address already has an account. Sent
    before the link's token is stored: a failed send leaves nothing behind, and the job's
    retry makes a new link.

    Returns:
        Whether a message was sent.
    """
    config = current_app.config
    mail = patients.registration_mail(db.session, pending_id,
                                      base_url=config["PUBLIC_BASE_URL"])
    if mail is None:  # nothing to send directly (a note to an account goes with the others)
        db.session.commit()
        return False
    backend = notify.backend_from_config(config)
    backend.open()
    try:
        backend.send(notify.OutgoingMessage(0, mail.kind, notify.EMAIL, mail.to, mail.subject,
                                            mail.body, None, None))
    except notify.DeliveryDeferred:
        raise  # "not now": the job's retries try again (the link is made afresh)
    except notify.DeliveryRefused:
        # The relay refuses this address for good (anyone can type one into the form):
        # trying again for hours would only repeat it. The registration goes; nothing was
        # sent, so nothing is lost.
        db.session.rollback()
        patients.drop_pending_registration(db.session, pending_id)
        db.session.commit()
        return False
    finally:
        backend.close()
    db.session.commit()
    return True


def purge_pending_registrations() -> int:
    """RQ entry point (nightly): forget registrations whose link expired unopened.

    Returns:
        How many were forgotten.
    """
    purged = patients.purge_pending_registrations(db.session)
    db.session.commit()
    return purged
