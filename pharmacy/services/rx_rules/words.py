"""Whole numbers written in English words, as a controlled-drug prescription gives its total
quantity ("four hundred and twenty", "Fourteen (14) tablets", "one thousand two hundred")."""

from __future__ import annotations

import re

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_WORD = re.compile(r"[a-z]+")
#: Words that make a quantity something other than a whole number of units.
_NOT_WHOLE = {"point", "half", "halves", "quarter", "quarters", "third", "thirds"}


def words_to_number(text: str) -> int | None:
    """The whole number the words say, or None when they say none, or not clearly one.

    Number words may be joined by "and", spaces, hyphens and commas; other words (the
    unit: "tablets", "millilitres") are ignored, but only after the number. Fractions and
    decimals ("two point five", "half") give None, as do two separate numbers.
    """
    tokens = _WORD.findall(text.casefold().replace("-", " "))
    if any(t in _NOT_WHOLE for t in tokens):
        return None
    # "a hundred", "a thousand"
    tokens = ["one" if t == "a" and nxt in ("hundred", "thousand") else t
              for t, nxt in zip(tokens, [*tokens[1:], ""], strict=False)]
    total = current = 0
    seen = ended = False
    previous: str | None = None
    for token in tokens:
        if token in _UNITS or token in _TENS:
            if ended:
                return None  # a second number
            value = _UNITS.get(token, _TENS.get(token, 0))
            if previous in _TENS and token in _UNITS and 0 < value < 10:
                current += value  # "forty two"
            elif previous in _UNITS or previous in _TENS:
                return None  # "four two"
            else:
                current += value
            seen = True
        elif token == "hundred" and seen and previous not in ("hundred", "thousand", "and"):
            current = (current or 1) * 100
        elif token == "thousand" and seen:
            total += (current or 1) * 1000
            current = 0
        elif token == "and" and seen and not ended:
            pass
        elif token in ("hundred", "thousand"):
            return None  # a scale word out of place: not read as a number
        else:
            if seen:
                ended = True  # the unit, or anything after the number
            continue
        previous = token
    return total + current if seen else None
