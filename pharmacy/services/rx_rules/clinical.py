"""Clinical warnings: interactions, allergies and duplicate therapy.

A medicine is reduced to its ingredients (lower case; combinations split on ``+``) and ATC
codes. The interaction table's terms are ingredient names (matched exactly, ignoring case) or
ATC codes (matched as prefixes: ``M01A`` covers ibuprofen ``M01AE01``). Items are the
prescription's MedicationRequests with a formulary entry; current medicines are the bundle's
MedicationStatements, except those ``entered-in-error`` or ``stopped``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .bundle import BundleIndex, Entry
from .fhir import ATC_SYSTEM, codings, concept_names, get, text
from .identifiers import SNOMED_SYSTEM
from .types import Finding, FormularyEntry, FormularyView, InteractionEntry, Severity

NOT_CURRENT_STATEMENT_STATUSES = frozenset({"entered-in-error", "stopped"})
# An allergy record that says the patient is not (or no longer) allergic does not count.
NOT_ALLERGIC_VERIFICATION = frozenset({"entered-in-error", "refuted"})
NOT_ALLERGIC_CLINICAL = frozenset({"inactive", "resolved"})
ATC_LEVEL_4_LENGTH = 5

_ATC_RE = re.compile(r"[A-Z][0-9]{2}(?:[A-Z](?:[A-Z](?:[0-9]{2})?)?)?")


def normalise_name(name: str) -> str:
    """Names compare case-insensitively and exactly, after trimming."""
    return name.strip().casefold()


@dataclass(frozen=True)
class Medicine:
    """What the clinical rules know of one item or current medicine."""

    label: str                    # "Item 2 (Warfarin 5mg tablets)", "the current medicine ..."
    ingredients: frozenset[str]   # normalised names
    atcs: frozenset[str]          # upper case
    expression: str
    line_id: str | None = None    # the item's line id; None for a current medicine
    code: str | None = None       # SNOMED CT code, where one is known

    def has_term(self, term: str) -> bool:
        """Whether an interaction-table term names this medicine (ingredient or ATC prefix)."""
        if normalise_name(term) in self.ingredients:
            return True
        prefix = term.strip().upper()
        return bool(_ATC_RE.fullmatch(prefix)) and any(a.startswith(prefix) for a in self.atcs)


def _ingredients(entry: FormularyEntry) -> frozenset[str]:
    return frozenset(normalise_name(p) for p in (entry.ingredient or "").split("+") if p.strip())


def medicine_of_entry(entry: FormularyEntry, label: str, expression: str,
                      line_id: str | None = None) -> Medicine:
    """The Medicine of a prescription item whose code is in the formulary."""
    atcs = frozenset({entry.atc.strip().upper()}) if entry.atc and entry.atc.strip() else (
        frozenset())
    return Medicine(label, _ingredients(entry), atcs, expression, line_id, entry.code)


def statement_medicines(index: BundleIndex, formulary: FormularyView) -> list[Medicine]:
    """The patient's current medicines, from the bundle's MedicationStatements.

    A statement's medicine is found in the formulary by SNOMED CT code (current or previous)
    or by exact name; failing both, its text and displays are read as ingredient names and
    its ATC codings as classes.
    """
    by_name = {normalise_name(e.name): e for e in formulary.entries.values()}
    medicines: list[Medicine] = []
    for statement in index.of_type("MedicationStatement"):
        if get(statement.resource, "status") in NOT_CURRENT_STATEMENT_STATUSES:
            continue
        concept, path = _medication_concept(index, statement)
        names = concept_names(concept)
        snomed = [code for _, c in codings(concept)
                  if c.get("system") == SNOMED_SYSTEM and isinstance(code := c.get("code"), str)]
        entry = next((found for code in snomed if (found := formulary.lookup(code))), None)
        if entry is None:
            entry = next((by_name[n] for n in map(normalise_name, names) if n in by_name), None)
        if entry is not None:
            medicine = medicine_of_entry(entry, f"the current medicine {entry.name}", path)
            medicines.append(medicine)
            continue
        atcs = frozenset(code.upper() for _, c in codings(concept)
                         if c.get("system") == ATC_SYSTEM and (code := text(c.get("code"))))
        ingredients = frozenset(normalise_name(n) for n in names)
        if not atcs and not ingredients:
            continue
        shown = names[0] if names else next(iter(atcs))
        medicines.append(Medicine(f"the current medicine {shown}", ingredients, atcs, path,
                                  None, snomed[0] if snomed else None))
    return medicines


def _medication_concept(index: BundleIndex, entry: Entry) -> tuple[Any, str]:
    concept = get(entry.resource, "medicationCodeableConcept")
    if concept is not None:
        return concept, entry.path + ".medicationCodeableConcept"
    medication = index.resolve(get(entry.resource, "medicationReference"))
    if medication is not None and medication.resource_type == "Medication":
        return get(medication.resource, "code"), medication.path + ".code"
    return None, entry.path


def _pairs(items: Sequence[Medicine], current: Sequence[Medicine]
           ) -> Iterable[tuple[Medicine, Medicine]]:
    for i, first in enumerate(items):
        for second in items[i + 1:]:
            yield first, second
        for other in current:
            yield first, other


def check_pairs(items: Sequence[Medicine], current: Sequence[Medicine],
                interactions: Sequence[InteractionEntry]) -> list[Finding]:
    """``interaction`` and ``duplicate-therapy`` warnings for every pair of two items, and of
    an item and a current medicine."""
    rules = [r for r in interactions if r.a.strip() and r.b.strip()]
    # Which rule sides name each medicine, worked out once: a pair then costs two set
    # intersections instead of a pass over the whole table.
    sides: dict[int, tuple[set[int], set[int]]] = {}
    for medicine in (*items, *current):
        sides[id(medicine)] = ({n for n, r in enumerate(rules) if medicine.has_term(r.a)},
                               {n for n, r in enumerate(rules) if medicine.has_term(r.b)})
    findings: list[Finding] = []
    for first, second in _pairs(items, current):
        first_a, first_b = sides[id(first)]
        second_a, second_b = sides[id(second)]
        for n in sorted((first_a & second_b) | (first_b & second_a)):
            rule = rules[n]
            findings.append(Finding(
                "interaction", Severity.WARNING,
                f"{first.label} and {_lower_first(second.label)} interact "
                f"({rule.severity}): {rule.effect} ({rule.a} with {rule.b}).",
                first.expression, first.line_id))
        shared = sorted(first.ingredients & second.ingredients)
        classes = sorted({a[:ATC_LEVEL_4_LENGTH] for a in first.atcs
                          if len(a) >= ATC_LEVEL_4_LENGTH}
                         & {a[:ATC_LEVEL_4_LENGTH] for a in second.atcs
                            if len(a) >= ATC_LEVEL_4_LENGTH})
        if shared or classes:
            why = (f"both contain {', '.join(shared)}" if shared
                   else f"both are in ATC class {', '.join(classes)}")
            findings.append(Finding(
                "duplicate-therapy", Severity.WARNING,
                f"{first.label} and {_lower_first(second.label)} may be duplicate therapy: "
                f"{why}.", first.expression, first.line_id))
    return findings


#: Drug classes an allergy is often recorded as, by name, with their ATC groups (WHO
#: Collaborating Centre for Drug Statistics Methodology, ATC index; class names as in the
#: BNF). The pharmacy's own record codes such an allergy with these ATC groups, so that a
#: "penicillins" allergy flags amoxicillin (a bundle's allergy matches by name or ATC code
#: only, as the validation spec says).
ALLERGY_CLASSES: dict[str, tuple[str, ...]] = {
    "penicillin": ("J01C",), "penicillins": ("J01C",),
    "beta-lactam": ("J01C", "J01D"), "beta-lactams": ("J01C", "J01D"),
    "cephalosporin": ("J01DB", "J01DC", "J01DD", "J01DE", "J01DI"),
    "cephalosporins": ("J01DB", "J01DC", "J01DD", "J01DE", "J01DI"),
    "carbapenems": ("J01DH",), "macrolide": ("J01FA",), "macrolides": ("J01FA",),
    "tetracycline": ("J01AA",), "tetracyclines": ("J01AA",),
    "sulfonamide": ("J01E",), "sulfonamides": ("J01E",), "sulphonamides": ("J01E",),
    "quinolone": ("J01M",), "quinolones": ("J01M",), "fluoroquinolones": ("J01MA",),
    "aminoglycosides": ("J01G",),
    "nsaid": ("M01A",), "nsaids": ("M01A",),
    "non-steroidal anti-inflammatory drugs": ("M01A",),
    "opioid": ("N02A", "N07BC", "R05DA"), "opioids": ("N02A", "N07BC", "R05DA"),
    "opiates": ("N02A",),
    "statin": ("C10AA",), "statins": ("C10AA",),
    "ace inhibitor": ("C09A", "C09B"), "ace inhibitors": ("C09A", "C09B"),
    "benzodiazepine": ("N05BA", "N05CD"), "benzodiazepines": ("N05BA", "N05CD"),
}


def check_allergies(items: Sequence[Medicine], allergies: Sequence[Entry]) -> list[Finding]:
    """``allergy`` warnings: an item's ingredient or ATC class matches an AllergyIntolerance.

    Allergies match by ingredient name (``code.text`` or a coding's ``display``) or by an ATC
    code (system ``http://www.whocc.no/atc``) that is a prefix of the item's ATC code.
    """
    findings: list[Finding] = []
    for allergy in allergies:
        if not _counts(allergy.resource):
            continue
        concept = get(allergy.resource, "code")
        names = {normalise_name(n): n for n in concept_names(concept)}
        atcs = [code.upper() for _, c in codings(concept)
                if c.get("system") == ATC_SYSTEM and (code := text(c.get("code")))]
        for item in items:
            by_name = [names[n] for n in names if n in item.ingredients]
            by_class = [a for a in atcs if any(code.startswith(a) for code in item.atcs)]
            if not by_name and not by_class:
                continue
            reasons = [f"ingredient {n}" for n in by_name] + [
                f"ATC class {a} (item is {', '.join(sorted(item.atcs))})" for a in by_class]
            recorded = next(iter(names.values()), None) or ", ".join(atcs)
            findings.append(Finding(
                "allergy", Severity.WARNING,
                f"{item.label}: the patient has a recorded allergy to {recorded}, which "
                f"matches by {' and '.join(reasons)}.", item.expression, item.line_id))
    return findings


def _counts(allergy: Mapping[str, Any]) -> bool:
    verification = {c.get("code") for _, c in codings(get(allergy, "verificationStatus"))}
    clinical = {c.get("code") for _, c in codings(get(allergy, "clinicalStatus"))}
    return not (verification & NOT_ALLERGIC_VERIFICATION or clinical & NOT_ALLERGIC_CLINICAL)


def _lower_first(label: str) -> str:
    return label[:1].lower() + label[1:] if label.startswith("Item") else label
