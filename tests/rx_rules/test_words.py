"""Whole numbers in English words (controlled-drug quantities)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pharmacy.services.rx_rules.words import words_to_number

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
          "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
          "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    parts = [f"{_UNITS[hundreds]} hundred"] if hundreds else []
    if rest:
        tens, units = divmod(rest, 10)
        said = _UNITS[rest] if rest < 20 else _TENS[tens] + (f"-{_UNITS[units]}" if units else "")
        parts.append(("and " if hundreds else "") + said)
    return " ".join(parts)


def british(n: int) -> str:
    """How a prescriber writes n in words (British usage, 'and' after hundreds)."""
    thousands, rest = divmod(n, 1000)
    parts = [f"{_below_thousand(thousands)} thousand"] if thousands else []
    if rest:
        parts.append(("and " if thousands and rest < 100 else "") + _below_thousand(rest))
    return " ".join(parts) or "zero"


@given(st.integers(min_value=0, max_value=999_999))
def test_every_number_written_out_reads_back(n: int) -> None:
    assert words_to_number(british(n)) == n
    assert words_to_number(british(n).upper() + " tablets") == n


@pytest.mark.parametrize("text", ["", "tablets", "two point five", "half", "four two",
                                  "ten tablets and five", "twenty thirty"])
def test_what_is_not_one_clear_whole_number_is_none(text: str) -> None:
    assert words_to_number(text) is None


@given(st.text(max_size=60))
def test_never_raises(text: str) -> None:
    result = words_to_number(text)
    assert result is None or result >= 0
