"""Backup and restore: a pg_dump of the live database restores into a scratch one intact."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sqlalchemy import create_engine, text

from pharmacy.models import Base
from pharmacy.services import audit, audit_chain
from pharmacy.services.demo import seed_demo
from tests.conftest import drop_database, recreate_database

ROOT = Path(__file__).resolve().parents[2]


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {t.name: conn.execute(text(f'SELECT count(*) FROM "{t.name}"')).scalar_one()
                  for t in Base.metadata.sorted_tables}
    engine.dispose()
    return counts


def test_backup_restores_into_a_scratch_database(db, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seed_demo(db.session)
    audit.record(db.session, action="test.backup", entity_type="thing", entity_id=1)
    db.session.commit()
    dump = tmp_path / "backup.dump"
    env = {**os.environ, "DATABASE_URL": database_url}
    subprocess.run(["bash", "scripts/backup.sh", str(dump)], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)
    scratch = database_url + "_restore"
    recreate_database(scratch)
    try:
        done = subprocess.run(["bash", "scripts/restore.sh", str(dump)], cwd=ROOT,
                              env={**os.environ, "DATABASE_URL": scratch},
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert _counts(scratch) == _counts(database_url)
        # The restored copy still refuses edits to the audit trail.
        engine = create_engine(scratch)
        with engine.connect() as conn:
            try:
                conn.execute(text("UPDATE audit_events SET reason = 'x'"))
                raise AssertionError("the append-only trigger was not restored")
            except Exception as exc:  # noqa: BLE001
                assert "append-only" in str(exc)
        engine.dispose()
    finally:
        drop_database(scratch)
    assert audit_chain.verify(db.session).ok
