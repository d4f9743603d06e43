"""Loading the formulary, historic dm+d codes and interaction rules from CSV files.

The files ship in ``pharmacy/data/formulary`` (see SOURCES.md there). Loading is an upsert on
business keys, so it can run again after the files change without duplicating rows, and a
pharmacy's own additions are left alone.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import InteractionRule, InteractionSeverity, Medicine, MedicineCodeHistory

logger = logging.getLogger(__name__)

FORMULARY_DIR = Path(__file__).resolve().parent.parent / "data" / "formulary"


@dataclass(frozen=True)
class FormularyLoad:
    medicines: int
    previous_codes: int
    interactions: int


def _pack(raw: str) -> tuple[int | None, str | None]:
    """'28 tablet' -> (28, 'tablet'); '' -> (None, None)."""
    number, _, unit = raw.strip().partition(" ")
    if not number.isdigit():
        return None, None
    return int(number), unit or None


def _cd_schedule(raw: str) -> int | None:
    raw = raw.strip().upper()
    return int(raw.removeprefix("CD")[0]) if raw.startswith("CD") else None


def _bool(raw: str) -> bool:
    return raw.strip().lower() == "true"


def demo_price_minor(code: str) -> int:
    """A stable made-up pack price for demo data (the formulary carries no prices)."""
    return 199 + (int(code) % 17) * 50


def load_formulary(session: Session, directory: Path = FORMULARY_DIR) -> FormularyLoad:
    """Upsert medicines, previous codes and interaction rules from ``directory``."""
    by_code = {m.code: m for m in session.scalars(select(Medicine))}
    with (directory / "formulary.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        pack_size, pack_unit = _pack(row["pack_size"])
        dose = row["typical_adult_max_daily_dose_mg"].strip()
        values = {
            "code_system": row["code_system"],
            "name": row["name"],
            "ingredient": row["ingredient"],
            "strength": row["strength"] or None,
            "form": row["form"],
            "atc": row["atc"] or None,
            "cd_schedule": _cd_schedule(row["uk_cd_schedule"]),
            "us_dea_schedule": row["us_dea_schedule"] or None,
            "cold_chain": _bool(row["cold_chain"]),
            "prescription_only": _bool(row["prescription_only"]),
            "pack_size": pack_size,
            "pack_unit": pack_unit,
            "max_daily_dose_mg": Decimal(dose) if dose else None,
            "source": row["source"],
        }
        medicine = by_code.get(row["code"])
        if medicine is None:
            medicine = Medicine(code=row["code"], unit_price_minor=demo_price_minor(row["code"]),
                                **values)
            session.add(medicine)
            by_code[medicine.code] = medicine
        else:
            for key, value in values.items():
                setattr(medicine, key, value)
    session.flush()

    known_previous = {(h.previous_code, h.valid_from): h
                      for h in session.scalars(select(MedicineCodeHistory))}
    with (directory / "vmp_code_history.csv").open(newline="", encoding="utf-8") as fh:
        history = list(csv.DictReader(fh))
    for row in history:
        current = by_code.get(row["vpid"])
        if current is None:
            logger.warning("code history names unknown VPID %s", row["vpid"])
            continue
        valid_from = (date.fromisoformat(row["previous_valid_from"])
                      if row["previous_valid_from"] else None)
        entry = known_previous.get((row["previous_vpid"], valid_from)) or MedicineCodeHistory(
            previous_code=row["previous_vpid"], valid_from=valid_from)
        known_previous[(entry.previous_code, valid_from)] = entry
        entry.medicine_id = current.id
        entry.valid_to = date.fromisoformat(row["previous_valid_to"]) if row[
            "previous_valid_to"] else None
        session.add(entry)

    rules = {(r.substance_a, r.substance_b): r for r in session.scalars(select(InteractionRule))}
    with (directory / "interactions.csv").open(newline="", encoding="utf-8") as fh:
        interactions = list(csv.DictReader(fh))
    for row in interactions:
        rule = rules.get((row["a"], row["b"])) or InteractionRule(substance_a=row["a"],
                                                                 substance_b=row["b"])
        rule.severity = InteractionSeverity(row["severity"])
        rule.effect = row["effect"]
        rule.source = row["source"]
        session.add(rule)
        rules[(row["a"], row["b"])] = rule
    session.flush()
    return FormularyLoad(len(rows), len(history), len(interactions))
