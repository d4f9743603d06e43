"""Prescription validation: the rules of ``shared/spec/prescription-validation.md``.

``validate_bundle`` is pure and never raises; ``load_formulary_view`` reads the reference data
it needs from the database (importing SQLAlchemy only when called).
"""

from .engine import validate_bundle
from .formulary_csv import read_formulary_csv
from .formulary_view import load_formulary_view
from .types import (
    RULE_SYSTEM,
    Finding,
    FormularyEntry,
    FormularyView,
    InteractionEntry,
    ParsedItem,
    ParsedPatient,
    ParsedPrescriber,
    ParsedPrescription,
    Severity,
    ValidationReport,
)

__all__ = [
    "RULE_SYSTEM",
    "Finding",
    "FormularyEntry",
    "FormularyView",
    "InteractionEntry",
    "ParsedItem",
    "ParsedPatient",
    "ParsedPrescriber",
    "ParsedPrescription",
    "Severity",
    "ValidationReport",
    "load_formulary_view",
    "read_formulary_csv",
    "validate_bundle",
]
