"""Repeat prescriptions made directly as rows (no FHIR), for service tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

from pharmacy.models import PatientProfile, Prescription, PrescriptionItem, PrescriptionStatus
from tests.factories import PatientFactory, UserFactory

_serial = iter(range(1, 10_000))


def patient_with_account(**kwargs: object) -> PatientProfile:
    user = UserFactory()
    return PatientFactory(user_id=user.id, **kwargs)  # type: ignore[no-any-return]


def repeat_prescription(session, patient: PatientProfile, items: list[dict[str, object]], *,  # type: ignore[no-untyped-def]
                        dispensed_on: date | None, repeats_allowed: int = 5,
                        issued_on: date = date(2026, 10, 1),
                        status: PrescriptionStatus | None = None) -> Prescription:
    """A repeat prescription (original issue) with ``items``; dispensed at noon on a day."""
    n = next(_serial)
    rx = Prescription(
        prescription_id=f"TEST-{n:06d}", patient_id=patient.id, prescription_type="repeat",
        status=status or (PrescriptionStatus.DISPENSED if dispensed_on
                          else PrescriptionStatus.AWAITING_VERIFICATION),
        issued_on=issued_on, repeats_allowed=repeats_allowed, source_bundle={},
        dispensed_at=(datetime.combine(dispensed_on, time(12), tzinfo=UTC)
                      if dispensed_on else None))
    for i, item in enumerate(items, start=1):
        rx.items.append(PrescriptionItem(
            line_id=f"line-{i}", medication_code=f"{n}{i}",
            medication_display=str(item["name"]), quantity=Decimal(str(item.get("quantity", 56))),
            quantity_unit=str(item.get("unit", "tablet")),
            dosage_text=item.get("dosage"),  # type: ignore[arg-type]
            supply_duration_days=item.get("days", 28),  # type: ignore[arg-type]
            repeats_allowed=repeats_allowed))
    session.add(rx)
    session.flush()
    return rx
