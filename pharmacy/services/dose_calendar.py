"""Dose calendars for multi-dose packs: dosage instructions -> doses per day and time of day.

A multi-dose pack has four compartments a day (morning, noon, evening, night). The parser
reads the usual English dosage instructions ("one tablet twice a day", "two at night",
"30ml once daily", "one every 8 hours") and refuses anything it does not fully understand:
every word must be accounted for, so "one daily for 5 days" or "one or two at night" is
reported to the pharmacist rather than packed on a guess. "When required" medicines are
never packed.

Everything here except ``calendar_for_patient`` is pure: plain dataclasses in and out.
"""

from __future__ import annotations

import enum
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from ..errors import InvalidRequest
from ..models import PatientProfile, Prescription, PrescriptionStatus


class Slot(enum.StrEnum):
    """A compartment of a day in the pack, in the order the patient takes them."""

    MORNING = "morning"
    NOON = "noon"
    EVENING = "evening"
    NIGHT = "night"

    @property
    def label(self) -> str:
        return _SLOT_LABELS[self]


_SLOT_LABELS = {Slot.MORNING: "Morning (breakfast)", Slot.NOON: "Noon (lunch)",
                Slot.EVENING: "Evening (tea)", Slot.NIGHT: "Night (bedtime)"}
SLOTS = tuple(Slot)

# Where n doses a day go when the instruction does not say (usual UK pack practice).
DEFAULT_SLOTS = {
    1: (Slot.MORNING,),
    2: (Slot.MORNING, Slot.EVENING),
    3: (Slot.MORNING, Slot.NOON, Slot.EVENING),
    4: (Slot.MORNING, Slot.NOON, Slot.EVENING, Slot.NIGHT),
}
# "Every n hours" spreads doses round the clock: with slots at about 8, 13, 18 and 22 h,
# every 8 hours fits breakfast, lunch and bedtime better than breakfast, lunch and tea.
INTERVAL_SLOTS = {
    24: (Slot.MORNING,),
    12: (Slot.MORNING, Slot.EVENING),
    8: (Slot.MORNING, Slot.NOON, Slot.NIGHT),
    6: (Slot.MORNING, Slot.NOON, Slot.EVENING, Slot.NIGHT),
}
PACKABLE_UNITS = frozenset({"tablet", "capsule", "caplet"})
MAX_CALENDAR_DAYS = 56


# --- parsing ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParsedDosage:
    """What an instruction means for the pack.

    Exactly one of: ``doses`` filled (a regular daily schedule), ``as_required`` (never
    packed), or ``problem`` (not understood; the pharmacist must decide).
    """

    text: str
    doses: Mapping[Slot, Decimal] = field(default_factory=dict)
    unit: str | None = None
    as_required: bool = False
    problem: str | None = None
    note: str | None = None    # how an interval was fitted to the slots, for the pharmacist

    @property
    def daily_quantity(self) -> Decimal:
        """Units a day (0 unless a regular schedule)."""
        return sum(self.doses.values(), Decimal(0))


_UNITS = {
    "tablet": "tablet", "tablets": "tablet", "tab": "tablet", "tabs": "tablet",
    "capsule": "capsule", "capsules": "capsule", "cap": "capsule", "caps": "capsule",
    "caplet": "caplet", "caplets": "caplet",
    "ml": "ml", "mls": "ml", "millilitre": "ml", "millilitres": "ml", "milliliter": "ml",
    "milliliters": "ml",
    "puff": "puff", "puffs": "puff", "sachet": "sachet", "sachets": "sachet",
    "drop": "drop", "drops": "drop", "patch": "patch", "patches": "patch",
    "suppository": "suppository", "suppositories": "suppository",
    "pessary": "pessary", "pessaries": "pessary", "lozenge": "lozenge", "lozenges": "lozenge",
    "spray": "spray", "sprays": "spray", "unit": "unit", "units": "unit",
}
_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
                 "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_TIMES_WORDS = {"once": 1, "twice": 2, "thrice": 3}
_ABBREVIATED_FREQUENCY = {"od": 1, "daily": 1, "bd": 2, "bid": 2, "tds": 3, "tid": 3,
                          "qds": 4, "qid": 4}
_NUM = r"(?:\d+(?:\.\d+)?|\d+/\d+|one|two|three|four|five|six|seven|eight|nine|ten)"

_PRN = re.compile(r"\b(?:as|when|if) (?:required|needed|necessary)\b|\bprn\b|\bas and when\b")
_RANGE = re.compile(rf"\b{_NUM} ?(?:or|to|-) ?{_NUM}\b")
_NOT_DAILY = re.compile(r"\b(?:weeks?|weekly|fortnight(?:ly)?|months?|monthly|alternate|every "
                        r"other|(?:mon|tues|wednes|thurs|fri|satur|sun)days?)\b")
_COURSE = re.compile(r"\bfor (?:\d+|one|two|three|four|five|six|seven|ten) (?:days?|nights?)\b|"
                     r"\buntil\b|\bthen\b|\breduc|\bincreas|\bstop|\bstat\b|\bimmediately\b")
_MASS = re.compile(r"\b\d+(?:\.\d+)? ?(?:mg|mcg|micrograms?|g|grams?|milligrams?)\b")

# Phrases rewritten to single tokens before the grammar runs: time of day, frequency.
_SLOT_PHRASES: list[tuple[str, Slot]] = [
    (r"(?:in|during) the mornings?|(?:each|every) morning|mornings?|mane|"
     r"(?:at|with|after|before) breakfast(?: ?time)?|breakfast(?: ?time)?", Slot.MORNING),
    (r"at (?:midday|noon|lunch ?time|lunch)|(?:with|after|before) lunch|midday|noon|"
     r"lunch ?time", Slot.NOON),
    (r"in the evenings?|(?:each|every) evening|evenings?|at tea ?time|at tea|tea ?time|"
     r"(?:with|after|before) (?:the |your )?(?:evening meal|tea|supper)", Slot.EVENING),
    (r"at night(?: ?time)?|(?:each|every) night|nightly|at bed ?time|bed ?time|"
     r"before (?:bed|going to bed|sleep)|nocte|night", Slot.NIGHT),
]
_FREQUENCY = re.compile(
    r"\b(?:(once|twice|thrice)|(\d+|one|two|three|four|five|six) times?) "
    r"(?:a|per|each|every) day\b|\b(once|twice|thrice|\d+ times|(?:one|two|three|four|five|"
    r"six) times) daily\b|\b(?:every|each|a|per) day\b|\b(od|bd|bid|tds|tid|qds|qid|daily)\b"
)
_INTERVAL = re.compile(r"\bevery (\d+|one|two|three|four|six|eight|twelve|twenty[- ]four)"
                       r" ?(?:hours?|hrs?|h)\b|\b(\d+) ?(?:hourly|hrly)\b")
_SPOON = re.compile(r"\b(\d+(?:\.\d+)?) ?ml spoonfuls?\b")
_FILLER = re.compile(
    r"\b(?:(?:with|after|before)(?: or (?:with|after|before))? (?:food|meals?|a meal|"
    r"a drink|a glass of water|water|milk)|by mouth|orally|swallowed whole|swallow whole|"
    r"to be taken|take|taken|give|use|swallow|chew|dissolve|inhale|the|of|dose|doses)\b"
)
_INTERVAL_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "six": 6, "eight": 8,
                   "twelve": 12, "twenty-four": 24, "twenty four": 24}


def _normalise(text: str) -> str:
    text = text.lower().replace("½", " half ").replace("&", " and ").replace("(s)", "")
    # Latin abbreviations written with dots: "o.d.", "t.d.s.", "p.r.n.".
    text = re.sub(r"\b(?:[a-z]\.){2,}[a-z]?\.?", lambda m: m.group(0).replace(".", ""), text)
    text = re.sub(r"(\d)\s*(ml|mls|mg|mcg|g)\b", r"\1 \2", text)
    text = re.sub(r"(?<=\d)\.(?!\d)|(?<!\d)\.|[,;:()!\"]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _quantity(token: str) -> Decimal | None:
    if token in _NUMBER_WORDS:
        return Decimal(_NUMBER_WORDS[token])
    if re.fullmatch(r"\d+/\d+", token):
        top, bottom = token.split("/")
        return Decimal(top) / Decimal(bottom) if int(bottom) else None
    if re.fullmatch(r"\d+(?:\.\d+)?", token):
        return Decimal(token)
    return None


def canonical_unit(unit: str | None) -> str | None:
    """"Tablets" -> "tablet", "mL" -> "ml"; unknown units are kept, lower-cased."""
    if not unit:
        return None
    key = unit.strip().lower()
    return _UNITS.get(key, key)


@dataclass
class _Clause:
    quantity: Decimal | None = None
    unit: str | None = None
    per_day: int | None = None
    interval_h: int | None = None
    slots: list[Slot] = field(default_factory=list)


def parse_dosage(text: str | None, *, default_unit: str | None = None) -> ParsedDosage:
    """Read one dosage instruction.

    Args:
        default_unit: the dispensing unit (``PrescriptionItem.quantity_unit``), used when the
            instruction gives none ("two at night").
    """
    original = (text or "").strip()

    def problem(reason: str) -> ParsedDosage:
        return ParsedDosage(original, problem=reason)

    if not original:
        return problem("No dosage instructions.")
    normal = _normalise(original)
    if _PRN.search(normal):
        return ParsedDosage(original, as_required=True)
    if re.search(r"\bas directed\b", normal):
        return problem("'As directed' gives no schedule to pack.")
    if _RANGE.search(normal):
        return problem("A dose range (for example 'one or two') cannot be packed; "
                       "the prescriber must choose one dose.")
    if _NOT_DAILY.search(normal):
        return problem("Not the same dose every day (weekly, alternate days or a changing "
                       "dose); set this up by hand.")
    if _COURSE.search(normal):
        return problem("A course with an end or a change of dose; set its dates by hand.")
    if _MASS.search(normal):
        return problem("The dose is in mg or g; the number of tablets depends on the "
                       "strength, so check it before packing.")

    for pattern, slot in _SLOT_PHRASES:
        normal = re.sub(rf"\b(?:{pattern})\b", f" @{slot.value} ", normal)
    normal = _SPOON.sub(lambda m: f" *{m.group(1)} ", normal)
    normal = _FREQUENCY.sub(lambda m: f" #{_per_day(m)} ", normal)
    normal = _INTERVAL.sub(lambda m: f" !{_hours(m)} ", normal)
    normal = re.sub(r"\bone and a half\b", "1.5", normal)
    normal = re.sub(r"\bhalf (?:a|an|of a|of one)\b|\bhalf\b", "0.5", normal)
    normal = _FILLER.sub(" ", normal)
    tokens = normal.split()
    return _parse_tokens(original, tokens, canonical_unit(default_unit))


def _per_day(match: re.Match[str]) -> int:
    word = match.group(1) or match.group(3) or match.group(4)
    count = match.group(2)
    if word in _TIMES_WORDS:
        return _TIMES_WORDS[word]
    if word and word in _ABBREVIATED_FREQUENCY:
        return _ABBREVIATED_FREQUENCY[word]
    if word:  # "3 times" / "three times" before "daily"
        count = word.split()[0]
    if count is None:  # "every day"
        return 1
    return int(count) if count.isdigit() else _NUMBER_WORDS[count]


def _hours(match: re.Match[str]) -> int:
    raw = (match.group(1) or match.group(2)).replace("-", " ")
    return int(raw) if raw.isdigit() else _INTERVAL_WORDS[raw]


def _parse_tokens(original: str, tokens: list[str], default_unit: str | None) -> ParsedDosage:
    clauses: list[_Clause] = []
    current = _Clause()
    unknown: list[str] = []
    for token in tokens:
        if token == "and":
            # "one in the morning and evening" continues the clause; "and one at night"
            # starts the next (decided when its quantity arrives).
            continue
        quantity = _quantity(token)
        if quantity is not None and token not in ("a", "an"):
            if current.quantity is not None or current.unit is not None:
                clauses.append(current)
                current = _Clause()
            current.quantity = quantity
        elif token in ("a", "an") and current.quantity is None:
            current.quantity = Decimal(1)
        elif token.startswith("*"):  # "5ml spoonful": the quantity counts spoons
            current.quantity = (current.quantity or Decimal(1)) * Decimal(token[1:])
            current.unit = "ml"
        elif token in _UNITS:
            current.unit = _UNITS[token]
        elif token.startswith("@"):
            current.slots.append(Slot(token[1:]))
        elif token.startswith("#"):
            current.per_day = int(token[1:])
        elif token.startswith("!"):
            current.interval_h = int(token[1:])
        else:
            unknown.append(token)
    clauses.append(current)
    if unknown:
        return ParsedDosage(original, problem="Not understood: '" + " ".join(unknown) + "'.")

    doses: dict[Slot, Decimal] = defaultdict(Decimal)
    units = set()
    notes = []
    unit = default_unit
    for clause in clauses:
        if clause.quantity is None:
            return ParsedDosage(original, problem="The instruction says when but not how much.")
        if clause.quantity <= 0:
            return ParsedDosage(original, problem="The dose is zero.")
        slots, note, reason = _slots_of(clause)
        if reason:
            return ParsedDosage(original, problem=reason)
        if note:
            notes.append(note)
        for slot in slots:
            doses[slot] += clause.quantity
        # "one tablet in the morning and two at night": the unit carries over.
        unit = clause.unit or unit
        units.add(unit)
    if len(units) > 1:
        return ParsedDosage(original, problem="The instruction mixes units.")
    ordered = {slot: doses[slot] for slot in SLOTS if slot in doses}
    return ParsedDosage(original, doses=ordered, unit=units.pop(),
                        note=" ".join(notes) or None)


def _slots_of(clause: _Clause) -> tuple[tuple[Slot, ...], str | None, str | None]:
    """The clause's slots, a note for the pharmacist, or a reason it cannot be packed."""
    if clause.interval_h is not None:
        if clause.per_day is not None or clause.slots:
            return (), None, "The instruction gives both an interval and times of day."
        slots = INTERVAL_SLOTS.get(clause.interval_h)
        if slots is None:
            return (), None, (f"Every {clause.interval_h} hours does not fit the four daily "
                              "pack compartments.")
        note = (f"'Every {clause.interval_h} hours' packed as "
                + ", ".join(s.value for s in slots) + "; check the spacing suits.")
        return slots, (note if len(slots) > 1 else None), None
    if clause.slots:
        if len(set(clause.slots)) != len(clause.slots):
            return (), None, "The same time of day is given twice."
        if clause.per_day is not None and clause.per_day != len(clause.slots):
            return (), None, (f"{clause.per_day} times a day does not match the "
                              f"{len(clause.slots)} time(s) of day given.")
        return tuple(clause.slots), None, None
    if clause.per_day is None:
        return (), None, "The instruction does not say how often."
    slots = DEFAULT_SLOTS.get(clause.per_day)
    if slots is None:
        return (), None, (f"{clause.per_day} times a day is more than the four daily pack "
                          "compartments.")
    return slots, None, None


# --- the calendar ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DoseItem:
    """One medicine the patient takes, as the calendar needs it."""

    medicine: str
    dosage_text: str | None
    unit: str | None = None         # the dispensing unit, when the instruction omits it
    item_id: int | None = None


@dataclass(frozen=True)
class SlotDose:
    """How much of one medicine goes in one compartment."""

    item_id: int | None
    medicine: str
    quantity: Decimal
    unit: str | None

    @property
    def packable(self) -> bool:
        """Solid doses go in the pack; liquids, inhalers and the like are supplied beside it."""
        return self.unit in PACKABLE_UNITS

    @property
    def label(self) -> str:
        """"1 tablet", "½ tablet", "1½ tablets", "30 ml"."""
        return quantity_label(self.quantity, self.unit)


def quantity_label(quantity: Decimal, unit: str | None) -> str:
    """A quantity as a patient reads it: halves as "½", plural units."""
    whole, rest = divmod(quantity, 1)
    if rest == Decimal("0.5") and unit != "ml":
        number = ("" if whole == 0 else f"{whole:f}") + "½"
    else:
        number = f"{quantity.normalize():f}"
    if unit is None:
        return number
    if unit == "ml":
        return f"{number} ml"
    plural = unit + ("es" if unit.endswith(("ch", "s")) else "s")
    plural = {"suppository": "suppositories", "pessary": "pessaries"}.get(unit, plural)
    return f"{number} {unit if quantity <= 1 else plural}"


@dataclass(frozen=True)
class CalendarDay:
    day: date
    slots: Mapping[Slot, tuple[SlotDose, ...]]   # every slot present, possibly empty


@dataclass(frozen=True)
class Unparsed:
    item: DoseItem
    reason: str


@dataclass(frozen=True)
class Scheduled:
    item: DoseItem
    dosage: ParsedDosage


@dataclass(frozen=True)
class DoseCalendar:
    """The patient's regular doses by day and time of day, and what was left out and why."""

    start: date
    days: tuple[CalendarDay, ...]
    scheduled: tuple[Scheduled, ...]
    as_required: tuple[DoseItem, ...]
    unparsed: tuple[Unparsed, ...]

    @property
    def slots(self) -> tuple[Slot, ...]:
        """The compartments of a day, in order (the calendar's columns)."""
        return SLOTS

    @property
    def end(self) -> date:
        """The last day covered."""
        return self.start + timedelta(days=len(self.days) - 1)

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(f"{s.item.medicine}: {s.dosage.note}" for s in self.scheduled
                     if s.dosage.note)


def dose_calendar(items: Sequence[DoseItem], start: date, days: int) -> DoseCalendar:
    """Group the patient's medicines by day and time of day for ``days`` days from ``start``.

    Raises:
        ValueError: ``days`` is not between 1 and MAX_CALENDAR_DAYS.
    """
    if not 1 <= days <= MAX_CALENDAR_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_CALENDAR_DAYS}, got {days}")
    scheduled: list[Scheduled] = []
    as_required: list[DoseItem] = []
    unparsed: list[Unparsed] = []
    for item in items:
        dosage = parse_dosage(item.dosage_text, default_unit=item.unit)
        if dosage.as_required:
            as_required.append(item)
        elif dosage.problem is not None:
            unparsed.append(Unparsed(item, dosage.problem))
        else:
            scheduled.append(Scheduled(item, dosage))
    per_slot = {slot: tuple(SlotDose(s.item.item_id, s.item.medicine, s.dosage.doses[slot],
                                     s.dosage.unit)
                            for s in scheduled if slot in s.dosage.doses)
                for slot in SLOTS}
    # Every day is the same today; a per-day structure leaves room for start/stop dates.
    calendar_days = tuple(CalendarDay(start + timedelta(days=n), per_slot) for n in range(days))
    return DoseCalendar(start, calendar_days, tuple(scheduled), tuple(as_required),
                        tuple(unparsed))


# --- the pharmacist's packing list -----------------------------------------------------------

@dataclass(frozen=True)
class PackingLine:
    item_id: int | None
    medicine: str
    quantity: Decimal        # per compartment
    unit: str | None
    compartments: int        # how many days' compartments get it

    @property
    def total(self) -> Decimal:
        return self.quantity * self.compartments

    @property
    def label(self) -> str:
        return quantity_label(self.quantity, self.unit)


@dataclass(frozen=True)
class PackingSlot:
    slot: Slot
    lines: tuple[PackingLine, ...]

    @property
    def units_per_compartment(self) -> Decimal:
        return sum((line.quantity for line in self.lines), Decimal(0))


@dataclass(frozen=True)
class PackingTotal:
    item_id: int | None
    medicine: str
    unit: str | None
    quantity: Decimal


@dataclass(frozen=True)
class PackingList:
    """What to put in each compartment, what goes beside the pack, and what needs a decision.

    ``unparsed`` must be empty (or each resolved by the pharmacist) before the pack is
    sealed; ``as_required`` medicines are supplied separately, never in the pack.
    """

    start: date
    end: date
    slots: tuple[PackingSlot, ...]
    outside_pack: tuple[tuple[Slot, PackingLine], ...]
    totals: tuple[PackingTotal, ...]
    as_required: tuple[DoseItem, ...]
    unparsed: tuple[Unparsed, ...]


def packing_list(calendar: DoseCalendar) -> PackingList:
    """The pharmacist's view of a calendar: per slot, which medicines and how many units."""
    counts: dict[tuple[Slot, int | None, str, Decimal, str | None], int] = defaultdict(int)
    for day in calendar.days:
        for slot, doses in day.slots.items():
            for dose in doses:
                counts[(slot, dose.item_id, dose.medicine, dose.quantity, dose.unit)] += 1
    in_pack: dict[Slot, list[PackingLine]] = {slot: [] for slot in SLOTS}
    outside: list[tuple[Slot, PackingLine]] = []
    totals: dict[tuple[int | None, str, str | None], Decimal] = defaultdict(Decimal)
    for (slot, item_id, medicine, quantity, unit), n in counts.items():
        line = PackingLine(item_id, medicine, quantity, unit, n)
        if unit in PACKABLE_UNITS:
            in_pack[slot].append(line)
        else:
            outside.append((slot, line))
        totals[(item_id, medicine, unit)] += line.total
    return PackingList(
        start=calendar.start, end=calendar.end,
        slots=tuple(PackingSlot(slot, tuple(in_pack[slot])) for slot in SLOTS),
        outside_pack=tuple(sorted(outside, key=lambda p: SLOTS.index(p[0]))),
        totals=tuple(PackingTotal(i, m, u, q) for (i, m, u), q in totals.items()),
        as_required=calendar.as_required, unparsed=calendar.unparsed)


# --- from the database -----------------------------------------------------------------------

_NOT_CURRENT = (PrescriptionStatus.REJECTED, PrescriptionStatus.CANCELLED,
                PrescriptionStatus.EXPIRED)


def current_repeat_items(session: Session, patient: PatientProfile,
                         today: date) -> list[DoseItem]:
    """The items of the latest issue of each of the patient's live repeat prescriptions (a
    batch a pharmacist stopped is not current: the medicine was stopped)."""
    from .prescriptions import my_medicines, repeats_stopped

    items = []
    for status in my_medicines(session, patient, today):
        item = status.item
        if item.status != "active" or item.prescription.status in _NOT_CURRENT:
            continue
        issue = item.prescription
        original = session.get(Prescription, issue.original_id) if issue.original_id else issue
        if original is not None and repeats_stopped(session, original) is not None:
            continue
        items.append(DoseItem(item.medication_display, item.dosage_text, item.quantity_unit,
                              item.id))
    return items


def calendar_for_patient(session: Session, patient: PatientProfile, start: date,
                         days: int) -> DoseCalendar:
    """The dose calendar of a patient's current repeat medicines.

    Raises:
        InvalidRequest: ``days`` is out of range.
    """
    if not 1 <= days <= MAX_CALENDAR_DAYS:
        raise InvalidRequest(f"A calendar covers 1 to {MAX_CALENDAR_DAYS} days.",
                             errors=[{"field": "days",
                                      "message": f"Between 1 and {MAX_CALENDAR_DAYS}."}])
    return dose_calendar(current_repeat_items(session, patient, start), start, days)
