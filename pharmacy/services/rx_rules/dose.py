"""Daily dose and days of supply from FHIR ``Dosage`` and a formulary strength string.

A dose in ``mg``, ``g`` or ``ug`` (UCUM; SNOMED unit names are read too) is a mass. Any other
dose unit is a count of dose units (tablets, ml, puffs) multiplied by the strength: ``500mg``
per tablet, ``250mg/5ml`` (50 mg per ml when the dose is a volume), ``100micrograms/dose``.
Doses per day come from ``timing.repeat``: ``frequency`` per ``period`` ``periodUnit``.

Every function takes raw (already FHIR-validated) JSON values and returns None for anything it
cannot read, never raising.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

MG = "mg"
ML = "ml"

# mg per unit. UCUM codes first; the rest are the spellings prescribing systems send as `unit`.
_MASS_MG: dict[str, Decimal] = {
    "mg": Decimal(1), "g": Decimal(1000), "ug": Decimal("0.001"),
    "mcg": Decimal("0.001"), "µg": Decimal("0.001"), "μg": Decimal("0.001"),
    "milligram": Decimal(1), "milligrams": Decimal(1), "gram": Decimal(1000),
    "grams": Decimal(1000), "microgram": Decimal("0.001"), "micrograms": Decimal("0.001"),
}
_SNOMED_MASS_MG = {"258684004": Decimal(1), "258682000": Decimal(1000),
                   "258685003": Decimal("0.001")}
# ml per unit.
_VOLUME_ML: dict[str, Decimal] = {
    "ml": Decimal(1), "millilitre": Decimal(1), "millilitres": Decimal(1),
    "milliliter": Decimal(1), "milliliters": Decimal(1), "l": Decimal(1000),
    "litre": Decimal(1000), "litres": Decimal(1000),
}
_SNOMED_VOLUME_ML = {"258773002": Decimal(1), "258770004": Decimal(1000)}
UCUM_SYSTEM = "http://unitsofmeasure.org"
SNOMED_SYSTEM = "http://snomed.info/sct"

# Days per UCUM period unit as (numerator, denominator), a month as 30 days, a year as 365:
# kept as a fraction so that "1 every 6 h" or "28 a week" stays exact.
_PERIOD_DAYS: dict[str, tuple[int, int]] = {
    "s": (1, 86400), "min": (1, 1440), "h": (1, 24), "d": (1, 1), "wk": (7, 1),
    "mo": (30, 1), "a": (365, 1),
}
_MICRO = Decimal("0.000001")

_STRENGTH_RE = re.compile(
    r"\s*(?P<amount>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>mg|g|micrograms?|mcg|ug)"
    r"\s*(?:/\s*(?P<per>[0-9]+(?:\.[0-9]+)?)?\s*(?P<per_unit>[a-z]+))?\s*",
    re.IGNORECASE,
)


def to_decimal(value: Any) -> Decimal | None:
    """A finite Decimal from a JSON number or numeric string, else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, float):
            result = Decimal(repr(value))
        elif isinstance(value, int | Decimal):
            result = Decimal(value)
        elif isinstance(value, str) and len(value) <= 64:
            result = Decimal(value.strip())
        else:
            return None
    except (InvalidOperation, ValueError, OverflowError):
        return None
    # Bounded, so that arithmetic on hostile values cannot overflow the decimal context.
    if not result.is_finite() or (result and not -12 <= result.adjusted() <= 12):
        return None
    return result


@dataclass(frozen=True)
class Strength:
    """A parsed single-ingredient strength: ``amount_mg`` per ``per`` ``per_unit``.

    ``per_unit`` is None for a strength per dose unit (``500mg`` per tablet).
    """

    amount_mg: Decimal
    per: Decimal = Decimal(1)
    per_unit: str | None = None

    @property
    def mg_per_ml(self) -> Decimal | None:
        return self.amount_mg / self.per if self.per_unit == ML and self.per else None


def parse_strength(text: str | None) -> Strength | None:
    """``"500mg"``, ``"62.5micrograms"``, ``"250mg/5ml"``, ``"100micrograms/dose"`` -> Strength.

    Combination strengths (``"8mg/500mg"``) and non-mass strengths (``"800units"``) give None.
    """
    if not isinstance(text, str) or len(text) > 100:
        return None
    match = _STRENGTH_RE.fullmatch(text)
    if match is None:
        return None
    amount = Decimal(match["amount"]) * _MASS_MG[match["unit"].lower()]
    per_unit = (match["per_unit"] or "").lower() or None
    if per_unit is None:
        return Strength(amount)
    if per_unit in _MASS_MG:
        return None  # "8mg/500mg": two ingredients, no single strength
    per = Decimal(match["per"]) if match["per"] else Decimal(1)
    if per <= 0:
        return None
    if per_unit in _VOLUME_ML:
        return Strength(amount, per * _VOLUME_ML[per_unit], ML)
    return Strength(amount, per, per_unit)


def _unit_key(quantity: Mapping[str, Any]) -> tuple[str, frozenset[str]]:
    """Classify a Quantity's unit: ("mass", {}), ("volume", {}) or ("count", names).

    A count's names are its unit text (singular, lower case) and its code, so that
    ``{"unit": "tablets"}`` and ``{"unit": "tablet", "code": "428673006"}`` are one unit.
    """
    code = quantity.get("code")
    system = quantity.get("system")
    unit = quantity.get("unit")
    code = code.strip() if isinstance(code, str) and code.strip() else None
    unit = unit.strip().lower() if isinstance(unit, str) and unit.strip() else None
    if code is not None and system == SNOMED_SYSTEM:
        if code in _SNOMED_MASS_MG:
            return ("mass", frozenset())
        if code in _SNOMED_VOLUME_ML:
            return ("volume", frozenset())
    elif code is not None:
        if code in _MASS_MG:  # UCUM is case-sensitive: "mg", "g", "ug"
            return ("mass", frozenset())
        if code.lower() in _VOLUME_ML:
            return ("volume", frozenset())
    if unit is not None:
        if unit in _MASS_MG:
            return ("mass", frozenset())
        if unit in _VOLUME_ML:
            return ("volume", frozenset())
    names = {unit.removesuffix("s")} if unit else set()
    if code is not None:
        names.add(f"{system or ''}|{code}")
    return ("count", frozenset(names))


def same_unit(kind_a: str, names_a: frozenset[str], kind_b: str,
              names_b: frozenset[str]) -> bool:
    """Whether two classified units measure the same thing (a count without a unit matches
    any count)."""
    if kind_a != kind_b:
        return False
    return kind_a != "count" or not names_a or not names_b or bool(names_a & names_b)


def _factor(quantity: Mapping[str, Any]) -> Decimal:
    """mg per unit for a mass, ml per unit for a volume, 1 for a count."""
    code = quantity.get("code")
    unit = quantity.get("unit")
    if quantity.get("system") == SNOMED_SYSTEM and isinstance(code, str):
        code = code.strip()
        return _SNOMED_MASS_MG.get(code) or _SNOMED_VOLUME_ML.get(code) or Decimal(1)
    # A UCUM code is case-sensitive; unit text is what a person typed ("G", "Grams"), read
    # in lower case as `_unit_key` reads it, so a unit's kind and its factor agree.
    for candidate, fold in ((code, False), (unit, True)):
        if isinstance(candidate, str):
            candidate = candidate.strip().lower() if fold else candidate.strip()
            if candidate in _MASS_MG:
                return _MASS_MG[candidate]
            if candidate.lower() in _VOLUME_ML:
                return _VOLUME_ML[candidate.lower()]
    return Decimal(1)


def is_mass(quantity: Mapping[str, Any]) -> bool:
    """Whether a FHIR Quantity's unit is a mass (mg, g, ug)."""
    return _unit_key(quantity)[0] == "mass"


def dose_mg(quantity: Mapping[str, Any], strength: Strength | None) -> Decimal | None:
    """One dose in mg: a mass directly, else the count of dose units times the strength."""
    value = to_decimal(quantity.get("value"))
    if value is None or value < 0:
        return None
    kind, _ = _unit_key(quantity)
    if kind == "mass":
        return value * _factor(quantity)
    if strength is None:
        return None
    if kind == "volume" and strength.mg_per_ml is not None:
        return value * _factor(quantity) * strength.mg_per_ml
    return value * strength.amount_mg


def _frequency_and_days(repeat: Any) -> tuple[Decimal, Decimal] | None:
    """(doses, days) of ``timing.repeat``: ``frequency`` (default 1) per period in days."""
    if not isinstance(repeat, Mapping):
        return None
    frequency = to_decimal(repeat.get("frequency", 1))
    period = to_decimal(repeat.get("period"))
    period_unit = repeat.get("periodUnit")
    if frequency is None or frequency < 0:
        return None
    if period is not None and isinstance(period_unit, str) and period_unit in _PERIOD_DAYS:
        numerator, denominator = _PERIOD_DAYS[period_unit]
        if period <= 0:
            return None
        return frequency * denominator, period * numerator
    for key in ("timeOfDay", "when"):
        times = repeat.get(key)
        if period is None and isinstance(times, list) and times:
            return Decimal(len(times)), Decimal(1)
    return None


def doses_per_day(repeat: Any) -> Decimal | None:
    """Doses per day from ``timing.repeat``: frequency (default 1) per period periodUnit.

    Without a period, a list of ``timeOfDay`` or ``when`` gives that many doses a day.
    """
    rate = _frequency_and_days(repeat)
    return tidy(rate[0] / rate[1]) if rate else None


def tidy(value: Decimal) -> Decimal:
    """Rounded to a millionth (undoing the last digit of decimal division), integral if whole."""
    if value.adjusted() > 15:
        return value
    rounded = value.quantize(_MICRO)
    return rounded.quantize(Decimal(1)) if rounded == rounded.to_integral_value() else (
        rounded.normalize())


@dataclass(frozen=True)
class DailyDose:
    """The prescribed amount per day: in dose units (``amount`` of ``unit``) and in mg."""

    amount: Decimal
    unit_kind: str            # "mass" (amount in mg), "volume" (ml) or "count"
    unit_names: frozenset[str]  # for counts: the unit's names ("tablet", "<system>|<code>")
    mg: Decimal | None        # None when the strength does not give a mass


def _one_dosage(dosage: Any, strength: Strength | None) -> DailyDose | None:
    if not isinstance(dosage, Mapping):
        return None
    dose_and_rate = dosage.get("doseAndRate")
    if not isinstance(dose_and_rate, list) or not dose_and_rate:
        return None
    first = dose_and_rate[0]
    quantity = first.get("doseQuantity") if isinstance(first, Mapping) else None
    if not isinstance(quantity, Mapping):
        return None
    value = to_decimal(quantity.get("value"))
    timing = dosage.get("timing")
    rate = _frequency_and_days(timing.get("repeat") if isinstance(timing, Mapping) else None)
    if value is None or value < 0 or rate is None:
        return None
    doses, days = rate
    kind, name = _unit_key(quantity)
    one_mg = dose_mg(quantity, strength)
    return DailyDose(
        amount=tidy(value * _factor(quantity) * doses / days),
        unit_kind=kind,
        unit_names=name,
        mg=tidy(one_mg * doses / days) if one_mg is not None else None,
    )


def daily_dose(dosages: Sequence[Any], strength: Strength | None) -> DailyDose | None:
    """The largest daily dose of a list of FHIR Dosage (raw JSON).

    Dosages with the same ``sequence`` apply together and are summed; different sequences
    follow one another (a reducing course), so the largest day counts.
    """
    groups: dict[object, list[DailyDose]] = {}
    for dosage in dosages:
        one = _one_dosage(dosage, strength)
        if one is None:
            continue
        sequence = dosage.get("sequence") if isinstance(dosage, Mapping) else None
        groups.setdefault(sequence if isinstance(sequence, int) else None, []).append(one)
    best: DailyDose | None = None
    for parts in groups.values():
        alike = all(same_unit(p.unit_kind, p.unit_names, parts[0].unit_kind,
                              parts[0].unit_names) for p in parts)
        mgs = [p.mg for p in parts if p.mg is not None]
        total_mg = sum(mgs, Decimal(0)) if len(mgs) == len(parts) else None
        if alike:
            total = DailyDose(sum((p.amount for p in parts), Decimal(0)), parts[0].unit_kind,
                              parts[0].unit_names, total_mg)
        elif total_mg is not None:
            total = DailyDose(total_mg, "mass", frozenset(), total_mg)
        else:
            continue
        if best is None or _larger(total, best):
            best = total
    return best


def _larger(a: DailyDose, b: DailyDose) -> bool:
    if a.mg is not None and b.mg is not None:
        return a.mg > b.mg
    if same_unit(a.unit_kind, a.unit_names, b.unit_kind, b.unit_names):
        return a.amount > b.amount
    return a.mg is not None and b.mg is None


def supply_days(quantity: Mapping[str, Any], daily: DailyDose,
                strength: Strength | None) -> Decimal | None:
    """How many days ``quantity`` (dispenseRequest.quantity) lasts at ``daily``."""
    value = to_decimal(quantity.get("value"))
    if value is None or value < 0 or daily.amount <= 0:
        return None
    kind, names = _unit_key(quantity)
    amount = value * _factor(quantity)
    if same_unit(kind, names, daily.unit_kind, daily.unit_names):
        return tidy(amount / daily.amount)
    # A dose in mg against a quantity of tablets or ml: convert through the strength.
    if daily.unit_kind == "mass" and daily.mg and strength is not None:
        if kind == "count" and strength.per_unit is None:
            return tidy(amount * strength.amount_mg / daily.mg)
        if kind == "volume" and strength.mg_per_ml:
            return tidy(amount * strength.mg_per_ml / daily.mg)
    return None


def whole_days(days: Decimal | None) -> int | None:
    """Days rounded down, or None (guards against absurd values from hostile input)."""
    if days is None or not days.is_finite() or days < 0 or days > 10**6:
        return None
    return math.floor(days)
