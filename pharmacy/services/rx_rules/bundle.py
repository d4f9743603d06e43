"""Reading a prescription Bundle: JSON decoding, FHIR R4 validation, entries and references.

Validation uses the R4B models of ``fhir.resources`` (R4B differs from R4 only in resources a
prescription never carries). A bundle that parses is dumped back to plain JSON, so the rules
read typed values (``"3"`` for an unsignedInt becomes ``3``) while FHIRPath indices stay those
of the bundle as sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

ACCEPTED_BUNDLE_TYPES = ("message", "collection", "document")
_ABSTRACT = frozenset({"Resource", "DomainResource"})
MAX_DEPTH = 64  # a FHIR prescription nests about 10 levels; deeper JSON is not one

_TYPE_ID_RE = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/.*)?")


class NotJson(ValueError):
    """The body is not JSON at all."""


class NotFhir(ValueError):
    """JSON that is not a FHIR R4 Bundle of the accepted kind; ``expression`` is FHIRPath."""

    def __init__(self, message: str, expression: str | None = "Bundle") -> None:
        super().__init__(message)
        self.expression = expression


def _reject_constant(name: str) -> Any:
    raise NotJson(f"{name} is not JSON")


def decode_json(raw: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON text (numbers with a fraction as Decimal); raise NotJson if it is not JSON."""
    try:
        text = bytes(raw) if isinstance(raw, bytearray | memoryview) else raw
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except NotJson:
        raise
    except (ValueError, TypeError, RecursionError) as exc:  # includes JSONDecodeError
        raise NotJson("The body is not JSON.") from exc


def plain_json(value: Any, depth: int = 0) -> Any:
    """A plain copy of a JSON-like value (dicts with string keys, lists, scalars).

    Raises NotFhir for anything else or for nesting deeper than MAX_DEPTH, so that a caller's
    Mapping cannot smuggle in objects the FHIR models would call or choke on.
    """
    if depth > MAX_DEPTH:
        raise NotFhir("The JSON is nested too deeply to be a prescription bundle.")
    if value is None or isinstance(value, str | bool | int | Decimal):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise NotFhir("The JSON holds a number that is not finite.")
        return value
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotFhir("The JSON holds an object key that is not a string.")
            result[key] = plain_json(item, depth + 1)
        return result
    if isinstance(value, list | tuple):
        return [plain_json(item, depth + 1) for item in value]
    raise NotFhir("The JSON holds a value that is not JSON.")


def _fhirpath(loc: tuple[int | str, ...]) -> str:
    path = "Bundle"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part and not part.startswith("function-") and part not in ("__root__",):
            path += "." + part
    return path


def validate_fhir(data: Any) -> dict[str, Any]:
    """Check ``data`` is a FHIR R4 Bundle of an accepted type; return it as normalised JSON.

    Raises:
        NotFhir: with a plain-words message and the FHIRPath of the first problem.
    """
    if not isinstance(data, dict):
        raise NotFhir("The body is JSON but not a FHIR resource (expected a Bundle object).")
    if data.get("resourceType") != "Bundle":
        raise NotFhir("The body is not a FHIR Bundle (resourceType must be 'Bundle').")
    entries = data.get("entry")
    if isinstance(entries, list):
        for index, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                continue
            name = resource.get("resourceType")
            if not isinstance(name, str) or not _is_resource_name(name):
                raise NotFhir(f"Entry {index} holds a resource of unknown type {_shown(name)}.",
                              f"Bundle.entry[{index}].resource")
    try:
        bundle = Bundle.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        where = [_fhirpath(tuple(e.get("loc", ()))) for e in errors[:3]]
        described = "; ".join(f"{w}: {e.get('msg', 'invalid')}" for w, e in zip(where, errors,
                                                                                 strict=False))
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise NotFhir(f"The bundle does not parse as FHIR R4: {described}{more}.",
                      where[0] if where else "Bundle") from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise NotFhir("The bundle does not parse as FHIR R4.") from exc
    if bundle.type not in ACCEPTED_BUNDLE_TYPES:
        raise NotFhir(f"The Bundle type is {_shown(bundle.type)}; a prescription comes as a "
                      "'message', 'collection' or 'document' bundle.", "Bundle.type")
    dumped = bundle.model_dump(mode="json", by_alias=True, exclude_none=True)
    if not isinstance(dumped, dict):  # pragma: no cover - pydantic always dumps a dict
        raise NotFhir("The bundle does not parse as FHIR R4.")
    return dumped


def _is_resource_name(name: str) -> bool:
    if not re.fullmatch(r"[A-Z][A-Za-z]{1,60}", name):
        return False
    try:
        model = get_fhir_model_class(name)
    except (ValueError, KeyError, AttributeError):
        return False
    # Data types (Quantity, Coding) have model classes too but are not resources.
    return name not in _ABSTRACT and any(base.__name__ == "Resource" for base in model.__mro__)


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 60 else text[:57] + "...'"


@dataclass(frozen=True)
class Entry:
    """One ``Bundle.entry`` with a resource: its index (for FHIRPath) and its resource."""

    index: int
    full_url: str | None
    resource: Mapping[str, Any]

    @property
    def path(self) -> str:
        return f"Bundle.entry[{self.index}].resource"

    @property
    def resource_type(self) -> str:
        return str(self.resource.get("resourceType", ""))


@dataclass
class BundleIndex:
    """The entries of a validated bundle, with reference resolution."""

    bundle: Mapping[str, Any]
    entries: list[Entry] = field(default_factory=list)
    _by_key: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def of(cls, bundle: Mapping[str, Any]) -> BundleIndex:
        index = cls(bundle)
        raw_entries = bundle.get("entry")
        for i, raw in enumerate(raw_entries if isinstance(raw_entries, list) else []):
            if not isinstance(raw, Mapping) or not isinstance(raw.get("resource"), Mapping):
                continue
            full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
            entry = Entry(i, full_url, raw["resource"])
            index.entries.append(entry)
            if full_url:
                index._by_key.setdefault(full_url, entry)
                match = _TYPE_ID_RE.fullmatch(full_url)
                if match:  # "https://server/fhir/Patient/123" also answers "Patient/123"
                    index._by_key.setdefault(f"{match[1]}/{match[2]}", entry)
            rid = entry.resource.get("id")
            if isinstance(rid, str) and rid:
                index._by_key.setdefault(f"{entry.resource_type}/{rid}", entry)
        return index

    def of_type(self, resource_type: str) -> Iterator[Entry]:
        return (e for e in self.entries if e.resource_type == resource_type)

    def resolve(self, reference: Any) -> Entry | None:
        """The entry a FHIR Reference (raw JSON) points at: by fullUrl, or by ``Type/id``."""
        if not isinstance(reference, Mapping):
            return None
        ref = reference.get("reference")
        if not isinstance(ref, str) or not ref:
            return None
        if ref in self._by_key:
            return self._by_key[ref]
        match = _TYPE_ID_RE.fullmatch(ref)
        if match:
            return self._by_key.get(f"{match[1]}/{match[2]}")
        return None
