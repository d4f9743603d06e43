"""Geocoding through a local stand-in Nominatim: configured provider, cache, failures."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select, text

from config import ConfigError
from pharmacy.models import GeocodeCache
from pharmacy.services import geocoding
from pharmacy.services.geocoding import (
    AddressQuery,
    GeocodeResult,
    GeocoderUnavailable,
    NominatimGeocoder,
    address_query,
    cache_query,
    geocode_address,
    geocoder_from_config,
)

from .conftest import NominatimStandIn, place

DOWNING = {"line1": "10 Downing Street", "line2": None, "city": "London",
           "postcode": "SW1A 2AA", "country": "GB"}
DOWNING_TEXT = "10 downing street, london, sw1a 2aa"


def _geocoder(stand_in: NominatimStandIn, timeout_s: float = 2.0) -> NominatimGeocoder:
    geocoder = geocoder_from_config({"GEOCODER": "nominatim", "GEOCODER_URL": stand_in.url,
                                     "GEOCODER_USER_AGENT": "dispensary-tests"},
                                    timeout_s=timeout_s)
    assert isinstance(geocoder, NominatimGeocoder)
    return geocoder


def _searches(stand_in: NominatimStandIn) -> int:
    return sum(1 for r in stand_in.requests if r["path"] == "/search")


def test_a_found_address_is_asked_for_once_however_it_is_spelt(app: Flask, db, nominatim) -> None:  # type: ignore[no-untyped-def]
    nominatim.places[DOWNING_TEXT] = place(51.5034, -0.1276, "10 Downing Street, London")
    geocoder = _geocoder(nominatim)

    first = geocode_address(db.session, **DOWNING, geocoder=geocoder)
    assert first == GeocodeResult(51.5034, -0.1276, "10 Downing Street, London")
    assert nominatim.requests[0]["countrycodes"] == "gb"

    again = geocode_address(db.session, line1="  10  downing street,", line2="", city="LONDON",
                            postcode="sw1a2aa", country="gb", geocoder=geocoder)
    assert again == GeocodeResult(51.5034, -0.1276, "10 Downing Street, London",
                                  from_cache=True)
    assert _searches(nominatim) == 1
    db.session.commit()
    row = db.session.scalars(select(GeocodeCache)).one()
    assert (row.provider, row.query) == (f"nominatim:{nominatim.url.removeprefix('http://')}",
                                         f"{DOWNING_TEXT}, gb")

    # By default the current app's configured geocoder is used (built once per app).
    saved = {k: app.config[k] for k in ("GEOCODER", "GEOCODER_URL")}
    app.config.update(GEOCODER="nominatim", GEOCODER_URL=nominatim.url)
    app.extensions.pop("dispensary.geocoder", None)
    try:
        assert geocode_address(db.session, **DOWNING) is not None
        assert _searches(nominatim) == 1
        assert geocode_address(db.session, **{**DOWNING, "line1": "11 Downing Street"}) is None
        assert _searches(nominatim) == 3
    finally:
        app.config.update(saved)
        app.extensions.pop("dispensary.geocoder", None)


def test_a_miss_is_remembered_too_after_trying_the_postcode_alone(db, nominatim) -> None:  # type: ignore[no-untyped-def]
    geocoder = _geocoder(nominatim)
    nowhere = {**DOWNING, "line1": "1 Nowhere Lane", "postcode": "ZZ9 9ZZ"}
    assert geocode_address(db.session, **nowhere, geocoder=geocoder) is None
    assert [r.get("q") or r.get("postalcode") for r in nominatim.requests] == [
        "1 Nowhere Lane, London, ZZ9 9ZZ", "ZZ9 9ZZ"]
    assert geocode_address(db.session, **nowhere, geocoder=geocoder) is None
    assert _searches(nominatim) == 2
    row = db.session.scalars(select(GeocodeCache)).one()
    assert (row.latitude, row.longitude, row.display_name) == (None, None, None)

    # An unknown house on a known postcode: the postcode's centre.
    nominatim.places["ls1 1aa"] = place(53.8, -1.55, "LS1 1AA, Leeds")
    found = geocode_address(db.session, line1="99 New Build Road", line2="Flat 2", city="Leeds",
                            postcode="ls11aa", country="GB", geocoder=geocoder)
    assert found is not None and (found.latitude, found.longitude) == (53.8, -1.55)
    assert nominatim.requests[-1]["postalcode"] == "LS1 1AA"


def test_provider_failures_are_503s_and_are_never_cached(db, nominatim) -> None:  # type: ignore[no-untyped-def]
    geocoder = _geocoder(nominatim)
    for status in (503, 500, 429, 400):
        nominatim.fail_with = status
        with pytest.raises(GeocoderUnavailable) as raised:
            geocode_address(db.session, **DOWNING, geocoder=geocoder)
        assert (raised.value.status, raised.value.code) == (503, "geocoder_unavailable")
    nominatim.fail_with, nominatim.delay_s = None, 0.5
    with pytest.raises(GeocoderUnavailable):  # timed out
        geocode_address(db.session, **DOWNING, geocoder=_geocoder(nominatim, timeout_s=0.1))
    dead = geocoder_from_config(provider="nominatim", url="http://127.0.0.1:9", timeout_s=1)
    with pytest.raises(GeocoderUnavailable):  # connection refused
        geocode_address(db.session, **DOWNING, geocoder=dead)
    assert db.session.scalar(select(func.count()).select_from(GeocodeCache)) == 0

    # The provider recovers: the next call asks again.
    nominatim.delay_s = 0
    nominatim.places[DOWNING_TEXT] = place(51.5, -0.12, "Downing Street")
    before = _searches(nominatim)
    assert geocode_address(db.session, **DOWNING, geocoder=geocoder) is not None
    assert _searches(nominatim) == before + 1


def test_two_requests_racing_for_one_address_store_one_row(db, nominatim, database_url) -> None:  # type: ignore[no-untyped-def]
    """The other request stores the answer while ours waits on the provider."""
    nominatim.places[DOWNING_TEXT] = place(51.5034, -0.1276, "Downing Street")
    geocoder = _geocoder(nominatim)
    real_lookup = geocoder.lookup

    def racing_lookup(query: AddressQuery) -> GeocodeResult | None:
        result = real_lookup(query)
        other = create_engine(database_url)
        with other.begin() as conn:
            conn.execute(text("INSERT INTO geocode_cache (provider, query, latitude, longitude,"
                              " display_name, created_at) VALUES (:p, :q, 1.0, 2.0, 'theirs',"
                              " now())"), {"p": geocoder.cache_key, "q": cache_query(query)})
        other.dispose()
        return result

    geocoder.lookup = racing_lookup  # type: ignore[method-assign]
    found = geocode_address(db.session, **DOWNING, geocoder=geocoder)
    assert found == GeocodeResult(1.0, 2.0, "theirs", from_cache=True)
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(GeocodeCache)) == 1


def test_the_factory_reads_config_or_explicit_values() -> None:
    assert geocoder_from_config({"GEOCODER": "none"}) is None
    assert geocoder_from_config({"GEOCODER": "nominatim"}, provider="none") is None
    public = geocoder_from_config({})
    assert isinstance(public, NominatimGeocoder) and public.cache_key == "nominatim"
    own = geocoder_from_config({"GEOCODER_URL": "https://geo.example.org/nominatim/"})
    assert own is not None and own.cache_key == "nominatim:geo.example.org/nominatim"
    with pytest.raises(ConfigError, match="GEOCODER must be one of"):
        geocoder_from_config({"GEOCODER": "google"})
    with pytest.raises(ConfigError, match="GEOCODER_URL"):
        geocoder_from_config({"GEOCODER_URL": "ftp://geo.example.org"})
    # Geocoding off: nothing is asked and nothing stored (the session is never touched).
    assert geocode_address(None, **DOWNING, geocoder=None) is None  # type: ignore[arg-type]


def test_normalisation() -> None:
    query = address_query(line1=" Flat 1,  2 High St. ", line2=None, city="york",
                          postcode="yo1 7hh", country="")
    assert query == AddressQuery("Flat 1, 2 High St, york, YO1 7HH", "YO1 7HH", "GB")
    long = address_query(line1="x" * 200, line2="y" * 200, city="z" * 100, postcode="AB1 2CD",
                         country="GB")
    key = cache_query(long)
    assert len(key) == 400 and key != cache_query(
        address_query(line1="x" * 200, line2="y" * 199 + "q", city="z" * 100,
                      postcode="AB1 2CD", country="GB"))
    assert geocoding.normalise_postcode("12345", "FR") == "12345"
