"""Identifier checks: published examples, and properties against independent implementations.

The generators below compute check digits from the algorithms as the research note states
them (not through python-stdnum), so the properties also test our use of stdnum (the ``+``
alphabet of the EPS id, the ``80840`` prefix of the NPI).
"""

from __future__ import annotations

import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pharmacy.services.rx_rules import identifiers as ids

DIGITS = "0123456789"
EPS_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+"


# -- independent reference implementations ------------------------------------------------

def nhs_check_digit(nine: str) -> int | None:
    total = sum(int(d) * w for d, w in zip(nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    return None if check == 10 else (0 if check == 11 else check)


def eps_check_character(seventeen: str) -> str:
    total = 0
    for ch in seventeen:
        total = ((total + int(ch, 36)) * 2) % 37
    return EPS_ALPHABET[(38 - total) % 37]


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6], [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2], [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]
_VERHOEFF_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def verhoeff_check_digit(body: str) -> str:
    c = 0
    for i, digit in enumerate(reversed(body)):
        c = _VERHOEFF_D[c][_VERHOEFF_P[(i + 1) % 8][int(digit)]]
    return str(_VERHOEFF_INV[c])


def luhn_check_digit(body: str) -> str:
    total = 0
    for i, digit in enumerate(reversed(body)):
        n = int(digit)
        if i % 2 == 0:  # doubled: the rightmost digit of the body sits next to the check
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return str((10 - total % 10) % 10)


def dea_check(six: str) -> str:
    d = [int(c) for c in six]
    return str((d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10)


def replace_at(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1:]


digits = st.text(alphabet=DIGITS, min_size=1, max_size=1)


# -- published examples ---------------------------------------------------------------------

@pytest.mark.parametrize("value,valid", [
    ("9434765870", True), ("943 476 5870", True), ("943-476-5870", True), ("9990548609", True),
    ("9434765871", False), ("9990548608", False), ("943476587", False), ("", False),
    ("94347658700", False), ("9434765870\n", True), ("abcdefghij", False),
])
def test_nhs_number_examples(value: str, valid: bool) -> None:
    assert ids.is_valid_nhs_number(value) is valid


@pytest.mark.parametrize("value,valid", [
    ("998244-A83008-238DCD", True), ("04F4C2-A99968-7F717P", True),
    ("A1B2C3-A83008-0004F+", True), ("a1b2c3-a83008-0004f+", True),
    ("269CA9-A99968-4577BP", False), ("269CA9-A99968-4577BF", True),
    ("998244-A83008-238DCE", False), ("DC2C66-A1B2C3-23407B", False),
    ("A1B2C3-A83008-0004F*", False), ("", False), ("+", False), ("0", False),
    ("998244-A83008-238DC", False), ("998244-A83008-238DCD-", True),
])
def test_prescription_id_examples(value: str, valid: bool) -> None:
    assert ids.is_valid_prescription_id(value) is valid


def test_default_stdnum_alphabet_would_be_wrong() -> None:
    from stdnum.iso7064 import mod_37_2

    assert not mod_37_2.is_valid("A1B2C3A830080004F+")  # '*' alphabet
    assert ids.is_valid_prescription_id("A1B2C3-A83008-0004F+")


@pytest.mark.parametrize("value,valid", [
    ("322237000", True), ("39113611000001102", True), ("428673006", True),
    ("322237001", False), ("39113611000001103", False), ("0322237000", False),
    ("12345", False), ("1" * 19, False), ("", False), ("32223700O", False),
])
def test_sctid_examples(value: str, valid: bool) -> None:
    assert ids.is_valid_medication_code(value) is valid


def test_sctid_partition() -> None:
    body = "1234567"
    for partition, medication in (("00", True), ("10", True), ("01", False), ("02", False),
                                  ("11", False), ("12", False)):
        code = body + partition + verhoeff_check_digit(body + partition)
        assert ids.is_valid_sctid(code)
        assert ids.is_valid_medication_code(code) is medication


@pytest.mark.parametrize("is_valid,value,valid", [
    (ids.is_valid_gmc_number, "6150129", True), (ids.is_valid_gmc_number, "C6150129", True),
    (ids.is_valid_gmc_number, "c6150129", True), (ids.is_valid_gmc_number, " 6150129 ", True),
    (ids.is_valid_gmc_number, "615012", False), (ids.is_valid_gmc_number, "61501290", False),
    (ids.is_valid_gmc_number, "CC6150129", False), (ids.is_valid_gmc_number, "L615012", False),
    (ids.is_valid_gphc_number, "2083469", True), (ids.is_valid_gphc_number, "5012345", False),
    (ids.is_valid_gphc_number, "1029683", False), (ids.is_valid_gphc_number, "3083469", False),
    (ids.is_valid_gphc_number, "208346", False), (ids.is_valid_gphc_number, "20834690", False),
    (ids.is_valid_nmc_pin, "19E4902G", True), (ids.is_valid_nmc_pin, "19e4902g", True),
    (ids.is_valid_nmc_pin, "19E4902", False), (ids.is_valid_nmc_pin, "194E902G", False),
    (ids.is_valid_nmc_pin, "19E49021", False),
    (ids.is_valid_npi, "1234567893", True), (ids.is_valid_npi, "1558598797", True),
    (ids.is_valid_npi, "1234567890", False), (ids.is_valid_npi, "123456789", False),
    (ids.is_valid_dea_number, "AP5836727", True), (ids.is_valid_dea_number, "AJ5184279", True),
    (ids.is_valid_dea_number, "ap5836727", True), (ids.is_valid_dea_number, "A95836727", True),
    (ids.is_valid_dea_number, "AP5836728", False), (ids.is_valid_dea_number, "AB4523763", False),
    (ids.is_valid_dea_number, "1P5836727", False), (ids.is_valid_dea_number, "AP583672", False),
])
def test_professional_identifier_examples(is_valid, value: str, valid: bool) -> None:
    assert is_valid(value) is valid


@pytest.mark.parametrize("function", [
    ids.is_valid_nhs_number, ids.is_valid_prescription_id, ids.is_valid_gmc_number,
    ids.is_valid_gphc_number, ids.is_valid_nmc_pin, ids.is_valid_npi, ids.is_valid_dea_number,
    ids.is_valid_sctid, ids.is_valid_medication_code,
])
@pytest.mark.parametrize("value", [None, 5, b"9434765870", ["x"], "\x00", "٣" * 10])
def test_checks_never_raise(function, value) -> None:
    assert function(value) is False


def test_every_spec_system_has_a_check() -> None:
    assert set(ids.PROFESSIONAL_IDENTIFIERS) == {
        "https://fhir.hl7.org.uk/Id/gmc-number", "https://fhir.hl7.org.uk/Id/gphc-number",
        "https://fhir.hl7.org.uk/Id/nmc-number", "http://hl7.org/fhir/sid/us-npi",
        "https://terminology.hl7.org/NamingSystem/usDEANumber"}


# -- properties ---------------------------------------------------------------------------

@given(st.text(alphabet=DIGITS, min_size=9, max_size=9))
def test_generated_nhs_numbers_pass(nine: str) -> None:
    check = nhs_check_digit(nine)
    assume(check is not None)
    assert ids.is_valid_nhs_number(nine + str(check))
    assert ids.is_valid_nhs_number(f"{nine[:3]} {nine[3:6]} {nine[6:]}{check}")


@given(st.text(alphabet=DIGITS, min_size=9, max_size=9), st.integers(0, 9), digits)
def test_nhs_number_single_digit_change_fails(nine: str, index: int, digit: str) -> None:
    # Weights 10..1 against modulus 11 (a prime): every single substitution changes the sum.
    check = nhs_check_digit(nine)
    assume(check is not None)
    number = nine + str(check)
    assume(number[index] != digit)
    assert not ids.is_valid_nhs_number(replace_at(number, index, digit))


@given(st.text(alphabet=DIGITS, min_size=8, max_size=8))
def test_nine_digits_with_check_10_never_pass(eight: str) -> None:
    # Choose the ninth digit so that the sum is 1 mod 11 (check "10"); 6 is 1/2 mod 11.
    partial = sum(int(d) * w for d, w in zip(eight, range(10, 2, -1), strict=True))
    ninth = (1 - partial) * 6 % 11
    assume(ninth < 10)
    nine = eight + str(ninth)
    assert nhs_check_digit(nine) is None
    assert not any(ids.is_valid_nhs_number(nine + d) for d in DIGITS)


eps_body = st.text(alphabet=string.digits + string.ascii_uppercase, min_size=17, max_size=17)


@given(eps_body)
def test_generated_prescription_ids_pass(body: str) -> None:
    check = eps_check_character(body)
    assert ids.prescription_id_check_character(body) == check
    assert ids.is_valid_prescription_id(body + check)
    assert ids.is_valid_prescription_id(f"{body[:6]}-{body[6:12]}-{body[12:]}{check}")
    assert ids.is_valid_prescription_id(f"{body[:6]}-{body[6:12]}-{body[12:]}{check}".lower())


@given(eps_body, st.integers(0, 17), st.sampled_from(EPS_ALPHABET))
def test_prescription_id_single_character_change_fails(body: str, index: int,
                                                       char: str) -> None:
    # MOD 37-2: 37 is prime and every weight (a power of 2) is non-zero, so any single
    # substitution is detected.
    number = body + eps_check_character(body)
    assume(number[index] != char)
    assume(index == 17 or char != "+")  # '+' is only allowed as the check character
    assert not ids.is_valid_prescription_id(replace_at(number, index, char))


@given(st.text(alphabet=DIGITS, min_size=4, max_size=15).filter(lambda s: s[0] != "0"),
       st.sampled_from(["00", "10"]))
def test_generated_medication_codes_pass(body: str, partition: str) -> None:
    code = body + partition + verhoeff_check_digit(body + partition)
    assert ids.is_valid_medication_code(code)


@given(st.text(alphabet=DIGITS, min_size=4, max_size=15).filter(lambda s: s[0] != "0"),
       st.sampled_from(["00", "10"]), st.data())
def test_medication_code_single_digit_change_fails(body: str, partition: str, data) -> None:
    # Verhoeff detects every single-digit substitution.
    code = body + partition + verhoeff_check_digit(body + partition)
    index = data.draw(st.integers(0, len(code) - 1))
    digit = data.draw(digits.filter(lambda d: d != code[index]))
    assert not ids.is_valid_medication_code(replace_at(code, index, digit))


@given(st.sampled_from("12"), st.text(alphabet=DIGITS, min_size=8, max_size=8))
def test_generated_npis_pass(first: str, rest: str) -> None:
    body = first + rest
    npi = body + luhn_check_digit("80840" + body)
    assert ids.is_valid_npi(npi)


@given(st.text(alphabet=DIGITS, min_size=9, max_size=9), st.integers(0, 9), digits)
def test_npi_single_digit_change_fails(body: str, index: int, digit: str) -> None:
    npi = body + luhn_check_digit("80840" + body)
    assume(npi[index] != digit)
    assert not ids.is_valid_npi(replace_at(npi, index, digit))


dea_letters = st.tuples(st.sampled_from("ABFGM"), st.sampled_from(string.ascii_uppercase + "9"))


@given(dea_letters, st.text(alphabet=DIGITS, min_size=6, max_size=6))
def test_generated_dea_numbers_pass(letters: tuple[str, str], six: str) -> None:
    assert ids.is_valid_dea_number("".join(letters) + six + dea_check(six))


@given(dea_letters, st.text(alphabet=DIGITS, min_size=6, max_size=6),
       st.sampled_from([2, 4, 6, 8]), digits)
def test_dea_change_in_a_single_weight_digit_or_check_fails(letters, six: str, index: int,
                                                            digit: str) -> None:
    # Digits 1, 3, 5 (weight 1) and the check digit: any change moves the last digit.
    number = "".join(letters) + six + dea_check(six)
    assume(number[index] != digit)
    assert not ids.is_valid_dea_number(replace_at(number, index, digit))


@given(dea_letters, st.text(alphabet=DIGITS, min_size=6, max_size=6),
       st.sampled_from([3, 5, 7]), digits)
def test_dea_change_in_a_double_weight_digit(letters, six: str, index: int,
                                             digit: str) -> None:
    # Digits 2, 4, 6 have weight 2: a change by 5 leaves the check digit unchanged. The
    # algorithm cannot catch it; every other change is caught.
    number = "".join(letters) + six + dea_check(six)
    assume(number[index] != digit)
    changed = replace_at(number, index, digit)
    assert ids.is_valid_dea_number(changed) is (abs(int(digit) - int(number[index])) == 5)


@given(st.text(alphabet=DIGITS, min_size=7, max_size=7), st.booleans())
def test_any_seven_digits_are_a_gmc_number(seven: str, consultant: bool) -> None:
    assert ids.is_valid_gmc_number(("C" if consultant else "") + seven)
    assert not ids.is_valid_gmc_number(seven[:6])
    assert not ids.is_valid_gmc_number(seven + "0")


@given(st.text(alphabet=DIGITS, min_size=6, max_size=6), st.sampled_from(DIGITS))
def test_gphc_numbers_start_with_2(six: str, first: str) -> None:
    assert ids.is_valid_gphc_number(first + six) is (first == "2")


@given(st.text(alphabet=DIGITS, min_size=2, max_size=2),
       st.sampled_from(string.ascii_uppercase),
       st.text(alphabet=DIGITS, min_size=4, max_size=4),
       st.sampled_from(string.ascii_uppercase))
def test_generated_nmc_pins_pass(two: str, letter: str, four: str, last: str) -> None:
    pin = two + letter + four + last
    assert ids.is_valid_nmc_pin(pin)
    assert not ids.is_valid_nmc_pin(pin[:-1])
    assert not ids.is_valid_nmc_pin(pin[:-1] + "1")
