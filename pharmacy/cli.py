"""``flask`` commands: seed-demo, rq-worker, enqueue-expire-stock, audit-verify, clear-caches,
reset-two-factor, and staff accounts (create-user, set-password, deactivate-user)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date, time

import click
from flask import Flask
from flask.cli import with_appcontext

from .extensions import db


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Load the formulary and create the demo pharmacy, people and history (idempotent).

    Refused in production: the demo accounts have published passwords."""
    from flask import current_app

    from .services.demo import DEMO_ACCOUNTS, seed_demo

    if current_app.config.get("ENV") == "production":
        raise click.ClickException("seed-demo is refused in production: the demo accounts "
                                   "have published passwords (use create-user)")

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
    from .services import accounts, totp

    changed = _account_change(lambda: totp.reset(
        db.session, accounts.get_user(db.session, email), reason=reason, operator=operator))
    click.echo(f"two-step sign-in reset for {email}; they must set it up again"
               if changed else f"{email} had no two-step sign-in; nothing changed")


def _shift(value: str | None) -> tuple[time, time] | None:
    if value is None:
        return None
    try:
        start, end = (time.fromisoformat(part.strip()) for part in value.split("-"))
    except ValueError:
        raise click.BadParameter("give the shift as HH:MM-HH:MM, e.g. 09:00-17:00") from None
    return start, end


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _account_change(change: Callable[[], object]) -> object:
    from .errors import DomainError

    try:
        result = change()
    except DomainError as err:
        db.session.rollback()
        raise click.ClickException(err.detail) from None
    db.session.commit()  # the cached principal follows the commit (caches.on_commit_of)
    return result


@click.command("create-user")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(["pharmacist", "admin", "courier"]))
@click.option("--name", "full_name", required=True, help="The person's full name.")
@click.option("--operator", required=True, help="Who is creating it (name).")
@click.option("--pharmacy", "pharmacy_ods", help="Courier: their pharmacy's ODS code.")
@click.option("--shift", help="Courier: shift as HH:MM-HH:MM.")
@click.option("--vehicle", help="Courier: registration of their usual vehicle.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@with_appcontext
def create_user_command(email: str, role: str, full_name: str, operator: str,
                        pharmacy_ods: str | None, shift: str | None, vehicle: str | None,
                        password_stdin: bool) -> None:
    """Create a staff account (patients register themselves); audited."""
    from .models import Role
    from .services import accounts

    password = _new_password(password_stdin)
    user = _account_change(lambda: accounts.create_staff(
        db.session, email=email, full_name=full_name, role=Role(role), password=password,
        operator=operator, pharmacy_ods=pharmacy_ods, shift=_shift(shift),
        vehicle_registration=vehicle))
    click.echo(f"created {role} {user.email}")  # type: ignore[attr-defined]


@click.command("set-password")
@click.argument("email")
@click.option("--operator", required=True, help="Who is doing this (name).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@with_appcontext
def set_password_command(email: str, operator: str, password_stdin: bool) -> None:
    """Set a user's password (forgotten, or a first one); their sessions and tokens end."""
    from .services import accounts

    password = _new_password(password_stdin)
    _account_change(lambda: accounts.set_password(
        db.session, accounts.get_user(db.session, email), password, operator=operator))
    click.echo(f"password set for {email}; their sessions and API tokens have ended")


@click.command("deactivate-user")
@click.argument("email")
@click.option("--reason", required=True)
@click.option("--operator", required=True, help="Who is doing this (name).")
@click.option("--reactivate", is_flag=True, help="Let a deactivated account sign in again.")
@with_appcontext
def deactivate_user_command(email: str, reason: str, operator: str, reactivate: bool) -> None:
    """Stop an account signing in (sessions and tokens end at once), or --reactivate it."""
    from .services import accounts

    changed = _account_change(lambda: accounts.set_active(
        db.session, accounts.get_user(db.session, email), reactivate, reason=reason,
        operator=operator))
    state = "active" if reactivate else "deactivated"
    click.echo(f"{email} is now {state}" if changed else f"{email} was already {state}")


@click.command("rotate-field-keys")
@with_appcontext
def rotate_field_keys_command() -> None:
    """Re-encrypt the columns encrypted at rest under the first of FIELD_ENCRYPTION_KEYS
    (after a new key was put first on every instance; the old one can go afterwards)."""
    from .models import encrypted

    with db.engine.begin() as connection:
        done = encrypted.rotate_all(connection)
    click.echo(f"{done} values re-encrypted under the first key")


def register_cli(app: Flask) -> None:
    for command in (seed_demo_command, rq_worker_command, enqueue_expire_stock_command,
                    audit_verify_command, clear_caches_command, reset_two_factor_command,
                    create_user_command, set_password_command, deactivate_user_command,
                    rotate_field_keys_command):
        app.cli.add_command(command)
