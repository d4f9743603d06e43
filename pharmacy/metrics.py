"""Prometheus metrics at /metrics: request latency, queue lengths, job durations, solver and
forecast figures. One registry per app (tests build several apps)."""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)

_EXT = "dispensary.metrics"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "dispensary_request_seconds", "Time to answer a request",
            ["endpoint", "method", "status"], registry=self.registry)
        self.queue_length = Gauge("dispensary_queue_length", "Jobs waiting per RQ queue",
                                  ["queue"], registry=self.registry)
        self.outbox_waiting = Gauge("dispensary_outbox_waiting",
                                    "Outbox messages not yet done", registry=self.registry)


# Job and solver metrics are observed in worker processes; they have their own registry,
# exported by whatever scrapes the worker (the web process exports its own).
JOB_SECONDS = Histogram("dispensary_job_seconds", "RQ job run time", ["function", "outcome"])
SOLVER_SECONDS = Histogram("dispensary_solver_seconds", "Route planning wall time",
                           buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300))
SOLVER_DISTANCE = Gauge("dispensary_solver_distance_m", "Distance of the last stored plan")
FORECAST_SECONDS = Histogram("dispensary_forecast_seconds", "Nightly forecast run time",
                             buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800))


def init_metrics(app: Flask) -> None:
    metrics = Metrics()
    app.extensions[_EXT] = metrics

    @app.before_request
    def _start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            metrics.request_seconds.labels(request.endpoint or "unknown", request.method,
                                           str(response.status_code)).observe(
                time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def _metrics() -> Any:
        _refresh_gauges(metrics)
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)


def _refresh_gauges(metrics: Metrics) -> None:
    from redis.exceptions import RedisError
    from rq import Queue
    from sqlalchemy import func, select

    from .extensions import db, get_redis
    from .jobs import ALL_QUEUES
    from .models import OutboxMessage

    try:
        for name in ALL_QUEUES:
            metrics.queue_length.labels(name).set(Queue(name, connection=get_redis()).count)
    except RedisError:
        pass
    try:
        metrics.outbox_waiting.set(db.session.scalar(select(func.count(OutboxMessage.id)).where(
            OutboxMessage.completed_at.is_(None))) or 0)
    except Exception:
        db.session.rollback()
    current_app.logger.debug("metrics gauges refreshed")
