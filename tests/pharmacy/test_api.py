"""The JSON API: tokens, the one error shape, and the OpenAPI document."""

from __future__ import annotations

import pytest
from flask import Flask
from openapi_spec_validator import validate

from pharmacy.models import Role
from tests.factories import DEFAULT_PASSWORD, MedicineFactory, UserFactory
from tests.pharmacy.helpers import api_token

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body  # type: ignore[no-any-return]


def test_token_for_a_pharmacist_and_who_am_i(client, db) -> None:  # type: ignore[no-untyped-def]
    UserFactory(email="pharmacist@example.com", role=Role.PHARMACIST)
    db.session.commit()
    response = client.post("/api/v1/auth/token",
                           json={"email": "Pharmacist@Example.com", "password": DEFAULT_PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.get_json()["role"] == "pharmacist"


def test_wrong_password_is_401_problem_and_is_audited(client, db) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from pharmacy.models import AuditEvent

    user = UserFactory()
    db.session.commit()
    response = client.post("/api/v1/auth/token", json={"email": user.email, "password": "nope"})
    body = assert_problem(response, 401)
    assert body["code"] == "unauthorised"
    actions = db.session.scalars(select(AuditEvent.action)).all()
    assert "user.login_failed" in actions


def test_unknown_email_is_the_same_401(client, db) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/auth/token",
                           json={"email": "nobody@example.com", "password": "x"})
    assert_problem(response, 401)


def test_sixth_wrong_password_is_locked_out_even_with_the_right_one(client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    for _ in range(4):
        assert_problem(client.post("/api/v1/auth/token",
                                   json={"email": user.email, "password": "bad"}), 401)
    # The fifth failure locks the account; from then on even the right password is refused.
    assert_problem(client.post("/api/v1/auth/token",
                               json={"email": user.email, "password": "bad"}), 429)
    locked = client.post("/api/v1/auth/token",
                         json={"email": user.email, "password": DEFAULT_PASSWORD})
    assert assert_problem(locked, 429)["code"] == "too_many_attempts"


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer not-a-token", "Basic abc"])
def test_missing_or_bad_tokens_are_401(client, header: str) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/medicines", headers={"Authorization": header} if header else {})
    assert_problem(response, 401)


def test_token_dies_when_the_users_tokens_are_revoked(client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    token = api_token(client, user.email, DEFAULT_PASSWORD)
    user.token_generation += 1
    db.session.commit()
    assert_problem(client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}),
                   401)


def test_medicines_search_and_detail(client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    MedicineFactory(name="Amlodipine 5mg tablets")
    wanted = MedicineFactory(name="Atorvastatin 20mg tablets")
    db.session.commit()
    headers = {"Authorization": f"Bearer {api_token(client, user.email, DEFAULT_PASSWORD)}"}
    page = client.get("/api/v1/medicines?q=ATORVA", headers=headers).get_json()
    assert page["total"] == 1
    assert page["items"][0]["id"] == wanted.id
    detail = client.get(f"/api/v1/medicines/{wanted.id}", headers=headers)
    assert detail.get_json()["name"] == "Atorvastatin 20mg tablets"
    assert_problem(client.get("/api/v1/medicines/999999", headers=headers), 404)
    # LIKE wildcards in the search are literal characters, not patterns.
    assert client.get("/api/v1/medicines?q=%25", headers=headers).get_json()["total"] == 0


def test_validation_errors_are_422_with_field_messages(client, db) -> None:  # type: ignore[no-untyped-def]
    body = assert_problem(client.post("/api/v1/auth/token", json={"email": "a@b.c"}), 422)
    assert body["code"] == "invalid_request"
    assert {"field": "password", "message": "Missing data for required field."} in body["errors"]
    user = UserFactory()
    db.session.commit()
    headers = {"Authorization": f"Bearer {api_token(client, user.email, DEFAULT_PASSWORD)}"}
    body = assert_problem(client.get("/api/v1/medicines?page=0", headers=headers), 422)
    assert body["errors"][0]["field"] == "page"


def test_malformed_json_is_a_4xx_problem(client) -> None:  # type: ignore[no-untyped-def]
    response = client.post("/api/v1/auth/token", data="{not json",
                           content_type="application/json")
    assert 400 <= response.status_code < 500
    assert response.mimetype == PROBLEM


def test_unknown_route_and_wrong_method_are_problems(client) -> None:  # type: ignore[no-untyped-def]
    assert assert_problem(client.get("/api/v1/nothing-here"), 404)["code"] == "not_found"
    response = client.delete("/api/v1/auth/token")
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


def test_huge_ids_are_404_not_500(client, db) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory()
    db.session.commit()
    headers = {"Authorization": f"Bearer {api_token(client, user.email, DEFAULT_PASSWORD)}"}
    assert_problem(client.get("/api/v1/medicines/99999999999999999999", headers=headers), 404)


def test_unexpected_errors_are_500_problems_without_internals(app: Flask, db) -> None:  # type: ignore[no-untyped-def]
    from config import config_for_tests
    from pharmacy import create_app

    cfg = app.config["DISPENSARY_CONFIG"]
    fresh = create_app(config_for_tests(cfg.SQLALCHEMY_DATABASE_URI, cfg.REDIS_URL))

    @fresh.get("/api/v1/_boom")
    def _boom() -> None:
        raise RuntimeError("secret internals")

    response = fresh.test_client().get("/api/v1/_boom")
    body = assert_problem(response, 500)
    assert "secret internals" not in response.get_data(as_text=True)
    assert body["code"] == "internal_server_error"


def test_openapi_document_is_valid_openapi_3(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/auth/token" in spec["paths"]
    token_responses = spec["paths"]["/api/v1/auth/token"]["post"]["responses"]
    assert {"200", "401", "422", "429"} <= set(token_responses)
    assert "bearerAuth" in spec["components"]["securitySchemes"]


def test_a_value_the_database_cannot_store_is_a_422_not_a_500(client, db) -> None:  # type: ignore[no-untyped-def]
    # Found by schemathesis: PostgreSQL text cannot hold NUL characters.
    response = client.post("/api/v1/auth/token",
                           json={"email": "a\u0000b@example.com", "password": "x"})
    body = assert_problem(response, 422)
    assert body["code"] == "invalid_request"
    assert client.get("/healthz").status_code == 200  # the session was rolled back
