"""The FormularyView the engine reads, loaded from the database.

SQLAlchemy and the models are imported inside the function, so that importing the engine
(``pharmacy.services.rx_rules``) does not pull in SQLAlchemy.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from .types import FormularyEntry, FormularyView, InteractionEntry

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def load_formulary_view(session: Session) -> FormularyView:
    """Read active medicines, their previous dm+d codes and the interaction rules.

    A medicine the pharmacy has deactivated (``is_active`` false) is not in the view, so a
    prescription for it gets ``medication-unknown``.
    """
    from sqlalchemy import select

    from pharmacy.models import InteractionRule, Medicine, MedicineCodeHistory

    entries: dict[str, FormularyEntry] = {}
    code_by_id: dict[int, str] = {}
    for medicine in session.scalars(
        select(Medicine).where(Medicine.is_active.is_(True)).order_by(Medicine.id)
    ):
        entries[medicine.code] = FormularyEntry(
            code=medicine.code,
            name=medicine.name,
            ingredient=medicine.ingredient,
            strength=medicine.strength,
            form=medicine.form,
            atc=medicine.atc,
            cd_schedule=medicine.cd_schedule,
            max_daily_dose_mg=(Decimal(str(medicine.max_daily_dose_mg))
                               if medicine.max_daily_dose_mg is not None else None),
            medicine_id=medicine.id,
        )
        code_by_id[medicine.id] = medicine.code
    previous: dict[str, str] = {}
    # Oldest validity first, so that where an old code was reused the latest mapping wins.
    for history in session.scalars(
        select(MedicineCodeHistory).order_by(
            MedicineCodeHistory.valid_from.asc().nulls_first(), MedicineCodeHistory.id
        )
    ):
        current = code_by_id.get(history.medicine_id)
        if current is not None and history.previous_code not in entries:
            previous[history.previous_code] = current
    interactions = [
        InteractionEntry(a=rule.substance_a, b=rule.substance_b,
                         severity=str(rule.severity.value if hasattr(rule.severity, "value")
                                      else rule.severity),
                         effect=rule.effect)
        for rule in session.scalars(select(InteractionRule).order_by(InteractionRule.id))
    ]
    return FormularyView(entries=entries, previous_codes=previous, interactions=interactions)
