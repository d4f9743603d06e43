from __future__ import annotations

from flask import Flask

from config import config_for_tests
from pharmacy import create_app


def test_healthz_answers_while_the_process_runs(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_200_with_database_and_redis_up(client, redis) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["checks"] == {"database": "ok", "redis": "ok"}
    assert body["down"] == []


def test_readyz_is_503_naming_redis_when_redis_is_unreachable(
    app: Flask, database_url: str
) -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    broken = create_app(config_for_tests(database_url, "redis://127.0.0.1:1/0"))
    response = broken.test_client().get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["down"] == ["redis"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "unreachable"


def test_readyz_is_503_naming_the_database_when_it_is_unreachable(redis_url: str) -> None:
    broken = create_app(config_for_tests(
        "postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2", redis_url))
    response = broken.test_client().get("/readyz")
    assert response.status_code == 503
    assert "database" in response.get_json()["down"]


def test_metrics_expose_request_latency_and_queue_lengths(client, redis) -> None:  # type: ignore[no-untyped-def]
    client.get("/healthz")
    body = client.get("/metrics").get_data(as_text=True)
    assert 'dispensary_request_seconds_count{endpoint="health.healthz"' in body
    assert 'dispensary_queue_length{queue="routing"}' in body
    assert "dispensary_outbox_waiting" in body
