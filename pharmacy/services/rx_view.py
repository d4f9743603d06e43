"""What the pharmacist's detail page shows: findings grouped by item, and the patient's record."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Prescription, PrescriptionItem

_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\]")


@dataclass(frozen=True)
class Issue:
    key: str
    severity: str
    rule: str
    diagnostics: str
    expression: str | None


@dataclass
class ItemFindings:
    item: PrescriptionItem | None          # None: about the prescription as a whole
    issues: list[Issue] = field(default_factory=list)


def _entry_line_ids(bundle: dict[str, Any]) -> dict[int, str]:
    out: dict[int, str] = {}
    entries = bundle.get("entry") if isinstance(bundle, dict) else None
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "MedicationRequest":
            out[index] = str(resource.get("id") or "")
    return out


def findings_by_item(rx: Prescription) -> list[ItemFindings]:
    """Each item with the findings whose FHIRPath points into its MedicationRequest."""
    by_line = {item.line_id: ItemFindings(item) for item in rx.items}
    general = ItemFindings(None)
    entry_lines = _entry_line_ids(rx.source_bundle)
    for index, raw in enumerate((rx.validation_outcome or {}).get("issue", [])):
        coding = (raw.get("details") or {}).get("coding") or [{}]
        expressions = raw.get("expression") or [None]
        issue = Issue(f"issue-{index}", str(raw.get("severity", "")),
                      str(coding[0].get("code", "")), str(raw.get("diagnostics", "")),
                      expressions[0])
        target = general
        match = _ENTRY.match(issue.expression or "")
        if match and entry_lines.get(int(match.group(1))) in by_line:
            target = by_line[entry_lines[int(match.group(1))]]
        target.issues.append(issue)
    return [general, *by_line.values()]


def patient_history(session: Session, rx: Prescription, limit: int = 20) -> list[Prescription]:
    """The patient's other prescriptions, newest first."""
    if rx.patient_id is None:
        return []
    return list(session.scalars(
        select(Prescription).where(Prescription.patient_id == rx.patient_id,
                                   Prescription.id != rx.id)
        .order_by(Prescription.received_at.desc()).limit(limit)))
