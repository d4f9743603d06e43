"""Small readers for raw FHIR JSON values (after validation): codings, identifiers, numbers.

Each tolerates any shape and returns None or an empty result instead of raising.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from .dose import to_decimal

ATC_SYSTEM = "http://www.whocc.no/atc"
CD_EXTENSION_URL = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug"


def get(obj: Any, *keys: str | int) -> Any:
    """``obj[k1][k2]...`` through dicts and lists, or None where a step is missing."""
    for key in keys:
        if isinstance(key, int):
            if not isinstance(obj, list) or not -len(obj) <= key < len(obj):
                return None
            obj = obj[key]
        else:
            if not isinstance(obj, Mapping):
                return None
            obj = obj.get(key)
    return obj


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """A non-blank string, stripped, or None."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def codings(concept: Any) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(index, coding) for each coding of a CodeableConcept."""
    for i, coding in enumerate(as_list(get(concept, "coding"))):
        if isinstance(coding, Mapping):
            yield i, coding


def concept_names(concept: Any) -> list[str]:
    """``text`` and each coding's ``display`` of a CodeableConcept."""
    names = [text(get(concept, "text"))]
    names.extend(text(coding.get("display")) for _, coding in codings(concept))
    return [n for n in names if n]


def identifiers_of(resource: Any) -> Iterator[tuple[int, str | None, str | None]]:
    """(index, system, value) of each identifier of a resource."""
    for i, ident in enumerate(as_list(get(resource, "identifier"))):
        if isinstance(ident, Mapping):
            system = ident.get("system") if isinstance(ident.get("system"), str) else None
            value = ident.get("value") if isinstance(ident.get("value"), str) else None
            yield i, system, value


def to_int(value: Any) -> int | None:
    """A whole number from a JSON number, else None."""
    number = to_decimal(value)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def quantity_value(quantity: Any) -> Decimal | None:
    return to_decimal(get(quantity, "value"))


_DURATION_DAYS = {"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7,
                  "mo": 30, "month": 30, "months": 30, "a": 365, "year": 365, "years": 365}


def duration_days(duration: Any) -> Decimal | None:
    """Days of a FHIR Duration (``expectedSupplyDuration``) in d, wk, mo or a."""
    value = quantity_value(duration)
    if value is None:
        return None
    for key in ("code", "unit"):
        unit = text(get(duration, key))
        if unit and unit.lower() in _DURATION_DAYS:
            return value * _DURATION_DAYS[unit.lower()]
    return None


def controlled_drug_extension(resource: Any) -> tuple[int | None, str | None, bool]:
    """(schedule 1-5, quantity in words, whether the extension is present) of a request."""
    schedule: int | None = None
    words: str | None = None
    present = False
    for ext in as_list(get(resource, "extension")):
        if get(ext, "url") != CD_EXTENSION_URL:
            continue
        present = True
        for sub in as_list(get(ext, "extension")):
            url = get(sub, "url")
            if url == "schedule":
                code = text(get(sub, "valueCoding", "code")) or ""
                if len(code) == 3 and code.upper().startswith("CD") and code[2] in "12345":
                    schedule = int(code[2])
            elif url == "quantityWords":
                words = words or text(get(sub, "valueString"))
    return schedule, words, present
