"""The API's Redis-backed caches never serve a revoked token or a stale catalogue.

Token checks read the user's role, active flag and token generation from a Redis copy
(services/principals.py); catalogue pages are kept per process under a version in Redis
(services/catalog.PAGES). Both must follow a committed change at once.
"""

from __future__ import annotations

from pharmacy.models import Role
from pharmacy.services import principals
from tests.factories import DEFAULT_PASSWORD, MedicineFactory, UserFactory
from tests.pharmacy.helpers import api_token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_check_reads_the_redis_copy_once_filled(client, db, redis) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    token = api_token(client, user.email, DEFAULT_PASSWORD)
    assert client.get("/api/v1/medicines", headers=_bearer(token)).status_code == 200
    raw = redis.get(principals.KEY.format(user.id))
    assert raw == f"pharmacist|1|{user.token_generation}".encode()


def test_deactivating_a_user_refuses_their_token_at_once(client, db, redis) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    token = api_token(client, user.email, DEFAULT_PASSWORD)
    assert client.get("/api/v1/medicines", headers=_bearer(token)).status_code == 200
    user.is_active = False
    db.session.commit()
    assert client.get("/api/v1/medicines", headers=_bearer(token)).status_code == 401


def test_revoking_tokens_and_changing_role_take_effect_at_once(client, db, redis) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    token = api_token(client, user.email, DEFAULT_PASSWORD)
    assert client.get("/api/v1/prescriptions", headers=_bearer(token)).status_code == 200
    user.role = Role.COURIER
    db.session.commit()
    assert client.get("/api/v1/prescriptions", headers=_bearer(token)).status_code == 403
    user.token_generation += 1
    db.session.commit()
    assert client.get("/api/v1/medicines", headers=_bearer(token)).status_code == 401
    fresh = api_token(client, user.email, DEFAULT_PASSWORD)
    assert client.get("/api/v1/medicines", headers=_bearer(fresh)).status_code == 200


def test_a_filled_copy_never_overwrites_a_published_one(db, redis) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PATIENT)
    db.session.commit()
    newer = principals.Principal(user.id, Role.PATIENT, False, user.token_generation)
    principals.publish(redis, {user.id: newer})
    # A reader that loaded the row before the change tries to fill the copy afterwards.
    redis.set(principals.KEY.format(user.id),
              principals.Principal.of(user).encode(), nx=True)
    assert principals.principal_for(db.session, redis, user.id) == newer


def test_without_redis_tokens_are_checked_in_the_database(client, db, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from redis.exceptions import ConnectionError as RedisConnectionError

    from pharmacy import extensions

    user = UserFactory(role=Role.PHARMACIST)
    MedicineFactory(name="Offlinol 5mg tablets")
    db.session.commit()
    token = api_token(client, user.email, DEFAULT_PASSWORD)

    class DownRedis:
        def __getattr__(self, name: str) -> object:
            def fail(*args: object, **kwargs: object) -> None:
                raise RedisConnectionError("down")
            return fail

    monkeypatch.setattr(extensions, "get_redis", lambda app=None: DownRedis())
    monkeypatch.setattr(extensions, "_cache_paused_until", 0.0)
    response = client.get("/api/v1/medicines?q=offlinol", headers=_bearer(token))
    assert response.status_code == 200
    assert [m["name"] for m in response.get_json()["items"]] == ["Offlinol 5mg tablets"]
    user.is_active = False
    db.session.commit()
    assert client.get("/api/v1/medicines", headers=_bearer(token)).status_code == 401


def test_a_price_change_shows_in_the_catalogue_at_once(client, db, redis) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PATIENT)
    medicine = MedicineFactory(name="Cachol 10mg tablets", unit_price_minor=250,
                               prescription_only=False)
    db.session.commit()
    headers = _bearer(api_token(client, user.email, DEFAULT_PASSWORD))

    def price() -> int:
        body = client.get("/api/v1/medicines?q=cachol", headers=headers).get_json()
        return int(body["items"][0]["unit_price_minor"])

    assert price() == 250
    assert price() == 250  # served from the page cache
    medicine.unit_price_minor = 275
    db.session.commit()
    assert price() == 275
    medicine.is_active = False
    db.session.commit()
    body = client.get("/api/v1/medicines?q=cachol", headers=headers).get_json()
    assert body == {"items": [], "page": 1, "page_size": 50, "total": 0}


def test_catalogue_pages_carry_an_etag_and_answer_304(client, db, redis) -> None:  # type: ignore[no-untyped-def]
    user = UserFactory(role=Role.PATIENT)
    MedicineFactory(name="Etagol 1mg tablets")
    db.session.commit()
    headers = _bearer(api_token(client, user.email, DEFAULT_PASSWORD))
    first = client.get("/api/v1/medicines?q=etagol", headers=headers)
    assert first.status_code == 200 and first.headers["ETag"]
    again = client.get("/api/v1/medicines?q=etagol",
                       headers={**headers, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.get_data() == b""


def test_a_rolled_back_change_does_not_retire_the_pages(db, redis) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.services import catalog

    medicine = MedicineFactory()
    db.session.commit()
    before = redis.get(catalog.VERSION_KEY)
    medicine.unit_price_minor = 1
    db.session.flush()
    db.session.rollback()
    db.session.commit()
    assert redis.get(catalog.VERSION_KEY) == before


def test_a_change_published_by_another_process_is_seen_within_a_second(
        client, db, redis, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pharmacy.services import ttl_cache

    user = UserFactory(role=Role.PHARMACIST)
    db.session.commit()
    token = api_token(client, user.email, DEFAULT_PASSWORD)
    assert client.get("/api/v1/medicines", headers=_bearer(token)).status_code == 200
    # Another process deactivates the user: Redis changes, this process's memory does not.
    redis.set(principals.KEY.format(user.id),
              principals.Principal(user.id, Role.PHARMACIST, False,
                                   user.token_generation).encode())
    assert client.get("/api/v1/medicines", headers=_bearer(token)).status_code == 200
    later = ttl_cache.time.monotonic() + principals.LOCAL_TTL_S + 0.01
    monkeypatch.setattr(ttl_cache.time, "monotonic", lambda: later)
    assert client.get("/api/v1/medicines", headers=_bearer(token)).status_code == 401
