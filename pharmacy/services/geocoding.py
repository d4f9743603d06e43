"""Geocoding delivery addresses through geopy, with every answer cached in the database.

The provider is configurable (``GEOCODER``: ``nominatim`` or ``none``; ``GEOCODER_URL`` points
at a self-hosted Nominatim or a test stand-in). Each normalised address is sent to the
provider once: hits and misses are stored in ``GeocodeCache``; provider failures are not
stored, so the next call asks again.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config import ConfigError

from ..errors import DomainError
from ..models import GeocodeCache

logger = logging.getLogger(__name__)

PUBLIC_NOMINATIM = "nominatim.openstreetmap.org"
# The public Nominatim allows one request a second (operations.osmfoundation.org/policies).
PUBLIC_NOMINATIM_MIN_INTERVAL_S = 1.0
DEFAULT_TIMEOUT_S = 5.0
_QUERY_MAX = 400        # GeocodeCache.query is VARCHAR(400)
_PROVIDER_MAX = 50      # GeocodeCache.provider is VARCHAR(50)
_SUPPORTED = ("nominatim", "none")


class GeocoderUnavailable(DomainError):
    """The geocoding provider failed (down, timed out, refused); try again later."""

    status, code, title = 503, "geocoder_unavailable", "Service Unavailable"


@dataclass(frozen=True)
class GeocodeResult:
    """Where an address is. ``from_cache`` tells whether the provider was asked this time."""

    latitude: float
    longitude: float
    display_name: str | None
    from_cache: bool = False


@dataclass(frozen=True)
class AddressQuery:
    """An address as sent to a provider: the free-form text and its parts."""

    text: str
    postcode: str
    country: str


class Geocoder(Protocol):
    """A provider adapter. ``cache_key`` names it in the cache (provider plus server)."""

    cache_key: str

    def lookup(self, query: AddressQuery) -> GeocodeResult | None:
        """Ask the provider; None when it knows no such place.

        Raises:
            GeocoderUnavailable: the provider could not answer.
        """
        ...


class NominatimGeocoder:
    """Nominatim (public or self-hosted) through geopy.

    Asks for the full address first; when that finds nothing, the postcode alone (a UK
    postcode centroid is within a street or two of the door, good enough to plan a route).
    """

    def __init__(self, *, url: str = "", user_agent: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 min_interval_s: float | None = None) -> None:
        from geopy.geocoders import Nominatim  # type: ignore[import-untyped]  # ~0.5 s

        domain, scheme = PUBLIC_NOMINATIM, "https"
        if url:
            parts = urlsplit(url if "://" in url else f"https://{url}")
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"GEOCODER_URL must be an http(s) URL, got {url!r}")
            domain = parts.netloc + parts.path.rstrip("/")
            scheme = parts.scheme
        self.cache_key = ("nominatim" if domain == PUBLIC_NOMINATIM
                          else f"nominatim:{domain}")[:_PROVIDER_MAX]
        self._client = Nominatim(domain=domain, scheme=scheme, user_agent=user_agent,
                                 timeout=timeout_s)
        if min_interval_s is None:
            min_interval_s = PUBLIC_NOMINATIM_MIN_INTERVAL_S if domain == PUBLIC_NOMINATIM else 0
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last_call = 0.0

    def lookup(self, query: AddressQuery) -> GeocodeResult | None:
        location = self._ask(query.text, query.country)
        if location is None and query.postcode:
            location = self._ask({"postalcode": query.postcode, "country": query.country},
                                 query.country)
        if location is None:
            return None
        return GeocodeResult(float(location.latitude), float(location.longitude),
                             location.address or None)

    def _ask(self, q: str | dict[str, str], country: str) -> Any:
        from geopy.exc import GeocoderServiceError  # type: ignore[import-untyped]

        with self._lock:  # one request at a time per process, spaced for the public server
            wait = self._last_call + self._min_interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                return self._client.geocode(q, exactly_one=True,
                                            country_codes=country.lower() or None)
            except GeocoderServiceError as exc:
                # Unavailable, timed out, rate limited, refused, unreadable answer: all
                # transient from the patient's point of view, and never cached.
                logger.warning("geocoder %s failed: %s", self.cache_key, type(exc).__name__)
                raise GeocoderUnavailable(
                    "Address lookup is not available at the moment; please try again later."
                ) from exc
            finally:
                self._last_call = time.monotonic()


def geocoder_from_config(config: Mapping[str, Any] | None = None, *,
                         provider: str | None = None, url: str | None = None,
                         user_agent: str | None = None,
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> Geocoder | None:
    """Build the configured geocoder; None when geocoding is switched off (``none``).

    Args:
        config: a settings mapping (the Flask config) with GEOCODER, GEOCODER_URL and
            GEOCODER_USER_AGENT; explicit keyword values win over it.

    Raises:
        ConfigError: an unknown provider or a malformed URL.
    """
    config = config or {}
    name = (provider if provider is not None else config.get("GEOCODER", "nominatim"))
    name = str(name).strip().lower()
    url = url if url is not None else str(config.get("GEOCODER_URL", "") or "")
    agent = user_agent or str(config.get("GEOCODER_USER_AGENT", "") or "dispensary")
    if name in ("none", "off", ""):
        return None
    if name == "nominatim":
        return NominatimGeocoder(url=url, user_agent=agent, timeout_s=timeout_s)
    raise ConfigError(f"GEOCODER must be one of {', '.join(_SUPPORTED)}, got {name!r}")


_SPACES = re.compile(r"\s+")
_EDGE_PUNCTUATION = " ,.;:"


def _clean(part: str | None) -> str:
    text = unicodedata.normalize("NFKC", part or "")
    return _SPACES.sub(" ", text).strip(_EDGE_PUNCTUATION)


def normalise_postcode(postcode: str, country: str) -> str:
    """Upper case, one space before the inward code of a UK postcode ("ls11aa" -> "LS1 1AA")."""
    compact = _SPACES.sub("", _clean(postcode)).upper()
    if country.upper() == "GB" and 5 <= len(compact) <= 7:
        return f"{compact[:-3]} {compact[-3:]}"
    return _SPACES.sub(" ", _clean(postcode)).upper()


def address_query(*, line1: str, line2: str | None, city: str, postcode: str,
                  country: str) -> AddressQuery:
    """The text sent to the provider, from the address parts (empty parts dropped)."""
    country = _clean(country).upper() or "GB"
    code = normalise_postcode(postcode, country)
    parts = [_clean(line1), _clean(line2), _clean(city), code]
    return AddressQuery(", ".join(p for p in parts if p), code, country)


def cache_query(query: AddressQuery) -> str:
    """The cache key of an address: case-folded text and country, at most 400 characters."""
    key = f"{query.text}, {query.country}".casefold()
    if len(key) > _QUERY_MAX:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        key = f"{key[:_QUERY_MAX - len(digest) - 1]}#{digest}"
    return key


class _FromApp(enum.Enum):
    TOKEN = "the current app's configured geocoder"


FROM_APP = _FromApp.TOKEN


def geocode_address(session: Session, *, line1: str, line2: str | None, city: str,
                    postcode: str, country: str = "GB",
                    geocoder: Geocoder | _FromApp | None = FROM_APP) -> GeocodeResult | None:
    """Where an address is, asking the provider at most once per normalised address.

    Args:
        geocoder: the provider; by default the one configured on the current Flask app
            (``geocoder_from_config(current_app.config)``); None means geocoding is off.

    Returns:
        The coordinates, or None when the provider knows no such place (remembered) or
        geocoding is off.

    Raises:
        GeocoderUnavailable: the provider failed; nothing is cached, so a retry asks again.
    """
    if geocoder is FROM_APP:
        geocoder = _app_geocoder()
    if geocoder is None:
        return None
    query = address_query(line1=line1, line2=line2, city=city, postcode=postcode,
                          country=country)
    key = cache_query(query)
    cached = _cached(session, geocoder.cache_key, key)
    if cached is not None:
        return _from_row(cached)

    result = geocoder.lookup(query)
    row = GeocodeCache(provider=geocoder.cache_key, query=key,
                       latitude=result.latitude if result else None,
                       longitude=result.longitude if result else None,
                       display_name=result.display_name if result else None)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        # Another request looked the same address up at the same moment and stored it first.
        stored = _cached(session, geocoder.cache_key, key)
        if stored is None:
            raise
        return _from_row(stored)
    logger.info("geocoded cache row %s (%s)", row.id, "found" if result else "not found")
    return result


def _cached(session: Session, provider: str, key: str) -> GeocodeCache | None:
    return session.scalar(select(GeocodeCache).where(GeocodeCache.provider == provider,
                                                     GeocodeCache.query == key))


def _from_row(row: GeocodeCache) -> GeocodeResult | None:
    if row.latitude is None or row.longitude is None:
        return None
    return GeocodeResult(row.latitude, row.longitude, row.display_name, from_cache=True)


_APP_GEOCODER = "dispensary.geocoder"


def _app_geocoder() -> Geocoder | None:
    """The current app's geocoder, built once per app (it holds the rate-limit clock)."""
    from flask import current_app

    extensions = current_app.extensions
    if _APP_GEOCODER not in extensions:
        extensions[_APP_GEOCODER] = geocoder_from_config(current_app.config)
    return extensions[_APP_GEOCODER]  # type: ignore[no-any-return]
