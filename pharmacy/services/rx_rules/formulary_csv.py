"""A FormularyView straight from the formulary CSV files, without a database.

Same files and parsing conventions as ``pharmacy.services.formulary.load_formulary`` (which
loads them into the database); used by the pure tests and by tools that run the engine
offline.
"""

from __future__ import annotations

import csv
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .types import FormularyEntry, FormularyView, InteractionEntry

FORMULARY_DIR = Path(__file__).resolve().parents[2] / "data" / "formulary"


def parse_cd_schedule(raw: str | None) -> int | None:
    """``"CD2"`` -> 2; ``""`` or anything else -> None (not controlled)."""
    text = (raw or "").strip().upper()
    if len(text) >= 3 and text.startswith("CD") and text[2] in "12345":
        return int(text[2])
    return None


def _decimal(raw: str | None) -> Decimal | None:
    try:
        return Decimal(raw.strip()) if raw and raw.strip() else None
    except InvalidOperation:
        return None


def read_formulary_csv(directory: Path = FORMULARY_DIR) -> FormularyView:
    """Read ``formulary.csv``, ``vmp_code_history.csv`` and ``interactions.csv``."""
    entries: dict[str, FormularyEntry] = {}
    with (directory / "formulary.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            entries[row["code"]] = FormularyEntry(
                code=row["code"],
                name=row["name"],
                ingredient=row["ingredient"],
                strength=row["strength"] or None,
                form=row["form"],
                atc=row["atc"] or None,
                cd_schedule=parse_cd_schedule(row["uk_cd_schedule"]),
                max_daily_dose_mg=_decimal(row["typical_adult_max_daily_dose_mg"]),
            )
    previous: dict[str, str] = {}
    with (directory / "vmp_code_history.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["vpid"] in entries:
                previous[row["previous_vpid"]] = row["vpid"]
    with (directory / "interactions.csv").open(newline="", encoding="utf-8") as fh:
        interactions = [InteractionEntry(a=row["a"], b=row["b"], severity=row["severity"],
                                         effect=row["effect"]) for row in csv.DictReader(fh)]
    return FormularyView(entries=entries, previous_codes=previous, interactions=interactions)
