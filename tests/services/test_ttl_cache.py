"""The per-process time-limited cache behind the API's token and catalogue checks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.services import ttl_cache
from pharmacy.services.ttl_cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(ttl_cache.time, "monotonic", fake)
    return fake


def test_an_entry_lives_for_its_time_only(clock: Clock) -> None:
    cache: TtlCache[str] = TtlCache(ttl_s=1.0)
    cache.put("a", "x")
    clock.now += 0.99
    assert cache.get("a") == "x"
    clock.now += 0.02
    assert cache.get("a") is None
    cache.put("b", "y", ttl_s=5)
    clock.now += 4
    assert cache.get("b") == "y"


def test_discard_and_clear(clock: Clock) -> None:
    cache: TtlCache[int] = TtlCache(ttl_s=10)
    cache.put(1, 1)
    cache.put(2, 2)
    cache.discard(1)
    cache.discard(99)
    assert cache.get(1) is None and cache.get(2) == 2
    cache.clear()
    assert cache.get(2) is None


@given(st.lists(st.integers(min_value=0, max_value=20), max_size=200))
def test_never_holds_more_than_its_bound_and_keeps_the_most_recent(keys: list[int]) -> None:
    cache: TtlCache[int] = TtlCache(ttl_s=3600, max_entries=5)
    for key in keys:
        cache.put(key, key)
        assert len(cache._entries) <= 5
    recent: list[int] = []
    for key in reversed(keys):
        if key not in recent:
            recent.append(key)
    for key in recent[:5]:
        assert cache.get(key) == key
