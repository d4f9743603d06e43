"""Migrations: one head, no drift from the models, upgrade on PostgreSQL and SQLite, downgrade."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect

from config import config_for_tests
from pharmacy import create_app
from pharmacy.models import Base
from tests.conftest import drop_database, recreate_database

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _script() -> ScriptDirectory:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(cfg)


def test_there_is_exactly_one_head() -> None:
    assert len(_script().get_heads()) == 1


def test_models_and_migrations_agree_on_postgresql(app: Flask) -> None:
    from pharmacy.extensions import db

    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models and migrations differ: {diff}"


def _fresh_app(url: str, redis_url: str) -> Flask:
    return create_app(config_for_tests(url, redis_url))


def test_upgrade_from_empty_then_downgrade_on_postgresql(database_url: str,
                                                         redis_url: str) -> None:
    url = database_url + "_migrations"
    recreate_database(url)
    scratch = _fresh_app(url, redis_url)
    with scratch.app_context():
        upgrade()
        engine = create_engine(url)
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
        downgrade(revision="base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        engine.dispose()
        from pharmacy.extensions import db

        db.engine.dispose()
    drop_database(url)


def test_upgrade_and_drift_on_an_empty_sqlite_file(tmp_path: Path, redis_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    scratch = _fresh_app(url, redis_url)
    with scratch.app_context():
        upgrade()
        from pharmacy.extensions import db

        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        downgrade(revision="base")


def test_0019_encrypts_the_seeds_already_stored_and_its_downgrade_decrypts_them(
        tmp_path: Path, redis_url: str) -> None:
    from sqlalchemy import select, text

    from pharmacy.extensions import db
    from pharmacy.models import User

    seed = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
    scratch = _fresh_app(f"sqlite:///{tmp_path / 'seeds.sqlite3'}", redis_url)
    with scratch.app_context():
        upgrade(revision="0018")
        with db.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO users (email, password_hash, role, full_name, is_active, "
                "failed_login_count, token_generation, totp_secret, totp_enabled_at, "
                "created_at, updated_at) VALUES ('p@example.org', 'x', 'pharmacist', 'P', 1, "
                "0, 0, :seed, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                {"seed": seed})
        upgrade()
        with db.engine.connect() as conn:
            stored = conn.execute(text("SELECT totp_secret FROM users")).scalar_one()
        assert stored.startswith("f1:") and seed not in stored
        assert db.session.scalar(select(User.totp_secret)) == seed
        db.session.remove()
        downgrade(revision="0018")
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT totp_secret FROM users")).scalar_one() == seed
        db.engine.dispose()
