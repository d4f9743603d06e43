"""Prometheus metrics at /metrics: request latency, queue lengths, job durations, solver and
forecast figures, for the whole deployment whichever process answers the scrape.

- Request latency is observed in the web workers. Under gunicorn (several worker processes)
  prometheus_client's multiprocess mode adds them up: gunicorn.conf.py gives every run its
  own PROMETHEUS_MULTIPROC_DIR. Without it (flask run, tests) one process, one registry
  per app (tests build several apps).
- Jobs, route planning and forecasts run in RQ work-horses: short-lived forked processes,
  often in another container, which nothing scrapes. They record into Redis
  (``SharedHistogram``, ``SharedGauge``) and the web's /metrics reads them back.
- Queue lengths and the outbox backlog are read at scrape time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from flask import Flask, Response, g, has_app_context, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

_EXT = "dispensary.metrics"
_PREFIX = "dispensary:metrics:"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "dispensary_request_seconds", "Time to answer a request",
            ["endpoint", "method", "status"], registry=self.registry)
        self.scrape = ScrapeCollector()
        self.registry.register(self.scrape)


def _redis() -> Any:
    if not has_app_context():
        return None
    from .extensions import get_redis

    return get_redis()


class SharedHistogram:
    """A histogram kept in Redis: observed by any process, exported by the web.

    One hash per metric; fields ``<labels json>|<bucket>`` hold cumulative bucket counts
    (as Prometheus exports them), ``|sum`` and ``|count`` the totals. A failed write is
    dropped: metrics never fail a job.
    """

    def __init__(self, name: str, documentation: str, *, buckets: Sequence[float],
                 labelnames: Sequence[str] = ()) -> None:
        self.name, self.documentation = name, documentation
        self.buckets = [*sorted(float(b) for b in buckets), float("inf")]
        self.labelnames = tuple(labelnames)
        self.key = _PREFIX + name
        SHARED.append(self)

    def observe(self, value: float, **labels: str) -> None:
        redis = _redis()
        if redis is None:
            return
        prefix = json.dumps([labels.get(name, "") for name in self.labelnames])
        try:
            pipe = redis.pipeline(transaction=False)
            for bound in self.buckets:
                if value <= bound:
                    pipe.hincrby(self.key, f"{prefix}|{bound}", 1)
            pipe.hincrbyfloat(self.key, f"{prefix}|sum", value)
            pipe.hincrby(self.key, f"{prefix}|count", 1)
            pipe.execute()
        except RedisError:
            pass

    @contextmanager
    def time(self, **labels: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - started, **labels)

    def collect(self, raw: dict[bytes, bytes]) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation,
                                       labels=list(self.labelnames))
        series: dict[str, dict[str, float]] = {}
        for field, value in raw.items():
            prefix, _, part = field.decode().rpartition("|")
            series.setdefault(prefix, {})[part] = float(value)
        for prefix, parts in sorted(series.items()):
            buckets = [(_le(bound), parts.get(str(bound), 0.0)) for bound in self.buckets]
            family.add_metric(json.loads(prefix), buckets, parts.get("sum", 0.0))
        return family


class SharedGauge:
    """A gauge kept in Redis (the last value any process set)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.key = _PREFIX + name
        SHARED.append(self)

    def set(self, value: float) -> None:
        redis = _redis()
        if redis is None:
            return
        with suppress(RedisError):
            redis.hset(self.key, "value", float(value))

    def collect(self, raw: dict[bytes, bytes]) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation)
        if b"value" in raw:
            family.add_metric([], float(raw[b"value"]))
        return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


SHARED: list[SharedHistogram | SharedGauge] = []

JOB_SECONDS = SharedHistogram(
    "dispensary_job_seconds", "RQ job run time", labelnames=("function", "outcome"),
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900))
SOLVER_SECONDS = SharedHistogram("dispensary_solver_seconds", "Route planning wall time",
                                 buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300))
SOLVER_DISTANCE = SharedGauge("dispensary_solver_distance_m",
                              "Distance of the last stored plan (the solver's objective)")
FORECAST_SECONDS = SharedHistogram("dispensary_forecast_seconds", "Nightly forecast run time",
                                   buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800))


class ScrapeCollector(Collector):
    """What is read when /metrics is scraped: queues, outbox, and the workers' metrics."""

    def collect(self) -> Iterable[Metric]:
        from sqlalchemy import func, select

        from .extensions import db
        from .jobs import ALL_QUEUES
        from .models import OutboxMessage

        redis = _redis()
        if redis is None:
            return
        queues = GaugeMetricFamily("dispensary_queue_length", "Jobs waiting per RQ queue",
                                   labels=["queue"])
        try:
            from rq import Queue

            for name in ALL_QUEUES:
                queues.add_metric([name], Queue(name, connection=redis).count)
            raws = [redis.hgetall(shared.key) for shared in SHARED]
        except RedisError:
            raws = []
        yield queues
        for shared, raw in zip(SHARED, raws, strict=False):
            yield shared.collect(raw)
        outbox = GaugeMetricFamily("dispensary_outbox_waiting", "Outbox messages not yet done")
        try:
            outbox.add_metric([], db.session.scalar(select(func.count(OutboxMessage.id)).where(
                OutboxMessage.completed_at.is_(None))) or 0)
        except Exception:  # noqa: BLE001 - a scrape must answer even with the database down
            db.session.rollback()
        yield outbox


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
        registry = metrics.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(metrics.scrape)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
