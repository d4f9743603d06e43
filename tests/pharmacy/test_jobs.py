"""The stock-expiry job: its logic, and the wiring through a real RQ worker on real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from flask import Flask
from rq import Queue
from sqlalchemy import select

from pharmacy.jobs import DEFAULT_QUEUE
from pharmacy.jobs.stock import enqueue_expire_stock, expire_stock
from pharmacy.models import AuditEvent, BatchStatus, MovementKind, StockBatch, StockMovement
from pharmacy.services.stock import expire_batches
from tests.factories import StockBatchFactory

ROOT = Path(__file__).resolve().parents[2]
TODAY = date(2026, 11, 26)


def test_expiry_marks_only_batches_past_their_date_and_is_idempotent(db) -> None:  # type: ignore[no-untyped-def]
    past = StockBatchFactory(expiry_date=TODAY - timedelta(days=1))
    on_the_day = StockBatchFactory(expiry_date=TODAY)  # may still be supplied today
    future = StockBatchFactory(expiry_date=TODAY + timedelta(days=30))
    recalled = StockBatchFactory(expiry_date=TODAY - timedelta(days=5),
                                 status=BatchStatus.RECALLED)
    db.session.commit()

    assert expire_batches(db.session, TODAY) == [past.id]
    db.session.commit()
    assert expire_batches(db.session, TODAY) == []
    db.session.commit()

    statuses = dict(db.session.execute(select(StockBatch.id, StockBatch.status)).all())
    assert statuses[past.id] is BatchStatus.EXPIRED
    assert statuses[on_the_day.id] is BatchStatus.AVAILABLE
    assert statuses[future.id] is BatchStatus.AVAILABLE
    assert statuses[recalled.id] is BatchStatus.RECALLED
    movements = db.session.scalars(select(StockMovement).where(
        StockMovement.kind == MovementKind.EXPIRED)).all()
    assert [(m.batch_id, m.on_hand_change) for m in movements] == [(past.id, 0)]
    events = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "stock.batch_expired")).all()
    assert [(e.entity_id, e.before, e.after) for e in events] == [
        (str(past.id), {"status": "available"}, {"status": "expired"})]


def test_job_function_commits_its_work(db) -> None:  # type: ignore[no-untyped-def]
    batch = StockBatchFactory(expiry_date=TODAY - timedelta(days=3))
    db.session.commit()
    assert expire_stock(TODAY.isoformat()) == 1
    db.session.expire_all()
    assert db.session.get(StockBatch, batch.id).status is BatchStatus.EXPIRED  # type: ignore[union-attr]


def test_a_real_worker_process_runs_the_job_from_real_redis(
    app: Flask, client, db, redis, database_url: str, redis_url: str  # type: ignore[no-untyped-def]
) -> None:
    batch = StockBatchFactory(expiry_date=TODAY - timedelta(days=2))
    db.session.commit()

    job = enqueue_expire_stock(TODAY, app)
    again = enqueue_expire_stock(TODAY, app)  # deduplicated while queued
    assert again.id == job.id
    assert Queue(DEFAULT_QUEUE, connection=redis).count == 1

    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "DISPENSARY_ENV": "testing"}
    done = subprocess.run(
        [sys.executable, "-m", "pharmacy.worker", "--burst", DEFAULT_QUEUE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    job.refresh()
    assert job.get_status() == "finished", done.stdout + done.stderr
    assert job.return_value() == 1
    db.session.expire_all()
    assert db.session.get(StockBatch, batch.id).status is BatchStatus.EXPIRED  # type: ignore[union-attr]
    # The worker's log lines are JSON and carry the job id.
    import json

    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert any(entry["job_id"] == job.id for entry in lines)
    # The job's run time, recorded in the worker's process, is on the web's /metrics.
    metrics = client.get("/metrics").get_data(as_text=True)
    assert ('dispensary_job_seconds_count{function="pharmacy.jobs.stock.expire_stock",'
            'outcome="finished"} 1.0') in metrics
