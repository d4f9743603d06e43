"""The Stripe client keeps the environment's proxy settings, read once when it is built."""

from __future__ import annotations

import pytest

from pharmacy.services.payments import StripeSettings, build_client


def test_proxy_settings_are_read_once_and_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = build_client(StripeSettings(api_key="sk_test_x"))
    http = client._requestor._client  # type: ignore[attr-defined]
    assert http._proxy["https"] == "http://proxy.example:3128"


def test_no_proxy_for_a_local_stripe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    client = build_client(StripeSettings(api_key="sk_test_x",
                                         api_base="http://127.0.0.1:8420"))
    http = client._requestor._client  # type: ignore[attr-defined]
    assert not http._proxy
