"""Identifier checks for prescriptions: small pure functions, each ``str -> bool``.

Check-digit algorithms come from python-stdnum where it has them (NHS number, ISO 7064
MOD 37-2, Verhoeff, Luhn); the DEA checksum and the GMC/GPhC/NMC formats are written here.
Background and sources: ``rx-rules-research.md`` section 2. Every function accepts any string
(and returns False for anything it cannot read), so callers need no try/except.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from stdnum import luhn, verhoeff
from stdnum.gb import nhs
from stdnum.iso7064 import mod_37_2

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
PRESCRIPTION_ID_SYSTEM = "https://fhir.nhs.uk/Id/prescription-order-number"
GMC_SYSTEM = "https://fhir.hl7.org.uk/Id/gmc-number"
GPHC_SYSTEM = "https://fhir.hl7.org.uk/Id/gphc-number"
NMC_SYSTEM = "https://fhir.hl7.org.uk/Id/nmc-number"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
DEA_SYSTEM = "https://terminology.hl7.org/NamingSystem/usDEANumber"
SNOMED_SYSTEM = "http://snomed.info/sct"

# The EPS prescription id uses '+' (not ISO's '*') for the check value 36.
EPS_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+"

# [0-9] rather than \d: \d also matches non-ASCII digits such as '٣'.
_NHS_RE = re.compile(r"[0-9]{10}")
_PRESCRIPTION_ID_RE = re.compile(r"[0-9A-Z]{17}[0-9A-Z+]")
_GMC_RE = re.compile(r"C?[0-9]{7}")
_GPHC_RE = re.compile(r"2[0-9]{6}")
_NMC_RE = re.compile(r"[0-9]{2}[A-Z][0-9]{4}[A-Z]")
_NPI_RE = re.compile(r"[0-9]{10}")
_DEA_RE = re.compile(r"[A-Z][A-Z9][0-9]{7}")
_SCTID_RE = re.compile(r"[1-9][0-9]{5,17}")

# SNOMED CT partition ids (2nd and 3rd digit from the right) of concepts: short and long form.
MEDICATION_PARTITIONS = frozenset({"00", "10"})


def compact_nhs_number(value: str) -> str:
    """The NHS number without the spaces or hyphens of its 3-3-4 display form."""
    return nhs.compact(value) if isinstance(value, str) else ""


def is_valid_nhs_number(value: str) -> bool:
    """Ten digits passing the modulus 11 check (spaces and hyphens of ``943 476 5870`` allowed).

    The range checks of the ``nhs-number`` package (``0000000000`` passes modulus 11) are not
    applied: the spec asks for the modulus 11 check only.
    """
    number = compact_nhs_number(value)
    return bool(_NHS_RE.fullmatch(number)) and nhs.is_valid(number)


def compact_prescription_id(value: str) -> str:
    """The short-form prescription id without hyphens or surrounding space, upper case."""
    return value.strip().replace("-", "").upper() if isinstance(value, str) else ""


def is_valid_prescription_id(value: str) -> bool:
    """An EPS short-form prescription id: 17 characters of ``0-9A-Z`` and a check character.

    ISO/IEC 7064 MOD 37-2 with ``+`` for 36; hyphens are ignored. The blocks are not checked
    for hex (real ODS codes contain any letter), only the check character.
    """
    number = compact_prescription_id(value)
    return bool(_PRESCRIPTION_ID_RE.fullmatch(number)) and mod_37_2.is_valid(
        number, alphabet=EPS_ALPHABET
    )


def prescription_id_check_character(body: str) -> str:
    """The check character for the first 17 characters of a short-form prescription id."""
    return mod_37_2.calc_check_digit(compact_prescription_id(body), alphabet=EPS_ALPHABET)


def is_valid_gmc_number(value: str) -> bool:
    """A GMC reference number: 7 digits, optionally prefixed ``C`` (consultant code)."""
    return isinstance(value, str) and bool(_GMC_RE.fullmatch(value.strip().upper()))


def is_valid_gphc_number(value: str) -> bool:
    """A GPhC pharmacist registration number: 7 digits starting with 2."""
    return isinstance(value, str) and bool(_GPHC_RE.fullmatch(value.strip()))


def is_valid_nmc_pin(value: str) -> bool:
    """An NMC PIN: 2 digits, a letter, 4 digits, a letter (``19E4902G``)."""
    return isinstance(value, str) and bool(_NMC_RE.fullmatch(value.strip().upper()))


def is_valid_npi(value: str) -> bool:
    """A US NPI: 10 digits passing Luhn computed with the ``80840`` prefix."""
    if not isinstance(value, str):
        return False
    number = value.strip()
    return bool(_NPI_RE.fullmatch(number)) and luhn.is_valid("80840" + number)


def dea_check_digit(digits6: str) -> str:
    """The DEA check digit for the first six digits: last digit of odd sum + 2 x even sum."""
    d = [int(c) for c in digits6]
    return str((d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10)


def is_valid_dea_number(value: str) -> bool:
    """A US DEA registration number: 2 letters (the second may be 9), 7 digits, checksum."""
    if not isinstance(value, str):
        return False
    number = value.strip().upper()
    return bool(_DEA_RE.fullmatch(number)) and dea_check_digit(number[2:8]) == number[8]


def is_valid_sctid(value: str, partitions: frozenset[str] | None = None) -> bool:
    """A SNOMED CT identifier: 6-18 digits, no leading zero, Verhoeff check digit.

    Args:
        value: the code as written.
        partitions: allowed partition ids (2nd and 3rd digits from the right); None for any.
    """
    if not isinstance(value, str) or not _SCTID_RE.fullmatch(value):
        return False
    if partitions is not None and value[-3:-1] not in partitions:
        return False
    return verhoeff.is_valid(value)


def is_valid_medication_code(value: str) -> bool:
    """A SNOMED CT concept id fit for a medicine: valid SCTID in partition 00 or 10."""
    return is_valid_sctid(value, MEDICATION_PARTITIONS)


@dataclass(frozen=True)
class ProfessionalIdentifier:
    """A prescriber identifier system of the spec, with its check and a plain description."""

    system: str
    label: str
    is_valid: Callable[[str], bool]
    expected: str  # what a valid value looks like, for diagnostics


PROFESSIONAL_IDENTIFIERS: dict[str, ProfessionalIdentifier] = {
    p.system: p
    for p in (
        ProfessionalIdentifier(GMC_SYSTEM, "GMC number", is_valid_gmc_number,
                               "7 digits, optionally after the letter C"),
        ProfessionalIdentifier(GPHC_SYSTEM, "GPhC number", is_valid_gphc_number,
                               "7 digits starting with 2 (a pharmacist's registration)"),
        ProfessionalIdentifier(NMC_SYSTEM, "NMC PIN", is_valid_nmc_pin,
                               "2 digits, a letter, 4 digits and a letter"),
        ProfessionalIdentifier(NPI_SYSTEM, "US NPI", is_valid_npi,
                               "10 digits with a valid Luhn check digit"),
        ProfessionalIdentifier(DEA_SYSTEM, "US DEA number", is_valid_dea_number,
                               "2 letters and 7 digits with a valid DEA check digit"),
    )
}
