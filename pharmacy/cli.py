"""``flask`` commands: seed-demo, rq-worker, enqueue-expire-stock, audit-verify, clear-caches."""

from __future__ import annotations

from datetime import date

import click
from flask import Flask
from flask.cli import with_appcontext

from .extensions import db


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Load the formulary and create the demo pharmacy, people and history (idempotent)."""
    from .services.demo import DEMO_ACCOUNTS, seed_demo

    result = seed_demo(db.session)
    db.session.commit()
    if result.created:
        click.echo(f"Seeded demo data: {result.medicines} medicines, {result.patients} patients.")
    else:
        click.echo(f"Demo data already present; formulary refreshed ({result.medicines} "
                   "medicines).")
    for role, (email, password, _) in DEMO_ACCOUNTS.items():
        click.echo(f"  {role.value:<10} {email:<26} {password}")


@click.command("rq-worker")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.argument("queues", nargs=-1)
def rq_worker_command(burst: bool, queues: tuple[str, ...]) -> None:
    """Run an RQ worker (same as ``python -m pharmacy.worker``)."""
    from .worker import main

    raise SystemExit(main([*queues] + (["--burst"] if burst else [])))


@click.command("enqueue-expire-stock")
@click.option("--day", type=click.DateTime(formats=["%Y-%m-%d"]), default=None)
@with_appcontext
def enqueue_expire_stock_command(day: object) -> None:
    """Queue the sweep that marks batches past their expiry date as expired."""
    from .jobs.stock import enqueue_expire_stock
    from .models.base import utcnow

    when = day.date() if day is not None else utcnow().date()  # type: ignore[attr-defined]
    job = enqueue_expire_stock(when if isinstance(when, date) else utcnow().date())
    click.echo(f"queued {job.id}")


@click.command("audit-verify")
@click.option("--seal/--no-seal", default=True, help="Seal settled events first.")
@with_appcontext
def audit_verify_command(seal: bool) -> None:
    """Check the audit trail's hash chain; exit 1 if any sealed event was tampered with."""
    from .services import audit_chain

    if seal:
        sealed = audit_chain.seal(db.session)
        db.session.commit()
        click.echo(f"sealed {sealed} event(s)")
    result = audit_chain.verify(db.session)
    if not result.ok:
        click.echo(f"TAMPERED: {result.problem} (event {result.event_id}); "
                   f"{result.checked} event(s) verified before it", err=True)
        raise SystemExit(1)
    click.echo(f"ok: {result.checked} sealed event(s) verified; {result.unsealed} not yet sealed")


@click.command("clear-caches")
@with_appcontext
def clear_caches_command() -> None:
    """Empty the Redis caches (signed-in users, catalogue pages), e.g. after a restore."""
    from .caches import clear_caches
    from .extensions import get_redis

    dropped = clear_caches(get_redis())
    click.echo(f"caches cleared ({dropped} signed-in users' copies dropped)")


@click.command("reset-two-factor")
@click.argument("email")
@click.option("--reason", required=True, help="Why, e.g. 'phone lost, identity checked'.")
@click.option("--operator", required=True, help="Who is doing this (name).")
@with_appcontext
def reset_two_factor_command(email: str, reason: str, operator: str) -> None:
    """Turn off a user's two-step sign-in (lost phone) and end their sessions; audited."""
    from sqlalchemy import func, select

    from .errors import DomainError
    from .models import User
    from .services import totp

    user = db.session.scalar(select(User).where(func.lower(User.email) == email.lower()))
    if user is None:
        raise click.ClickException(f"no user {email}")
    try:
        changed = totp.reset(db.session, user, reason=reason, operator=operator)
    except DomainError as err:
        raise click.ClickException(err.detail) from None
    db.session.commit()  # the cached principal follows the commit (caches.on_commit_of)
    click.echo(f"two-step sign-in reset for {user.email}; they must set it up again"
               if changed else f"{user.email} had no two-step sign-in; nothing changed")


def register_cli(app: Flask) -> None:
    for command in (seed_demo_command, rq_worker_command, enqueue_expire_stock_command,
                    audit_verify_command, clear_caches_command, reset_two_factor_command):
        app.cli.add_command(command)
