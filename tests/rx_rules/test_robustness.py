"""The engine answers every input with a report and never raises."""

from __future__ import annotations

import copy
import json
import logging
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pharmacy.services.rx_rules import Severity, ValidationReport, validate_bundle
from pharmacy.services.rx_rules import engine as engine_module

from .builders import NOW, WARFARIN_5, item, rules, rx

EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "rx"

json_scalars = (st.none() | st.booleans() | st.integers() | st.text(max_size=20)
                | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
fhir_keys = st.sampled_from([
    "resourceType", "type", "entry", "resource", "fullUrl", "status", "intent", "subject",
    "requester", "reference", "identifier", "system", "value", "dispenseRequest", "quantity",
    "dosageInstruction", "doseAndRate", "doseQuantity", "timing", "repeat", "frequency",
    "authoredOn", "medicationCodeableConcept", "coding", "code", "extension", "url",
])
fhir_like = st.recursive(
    json_scalars | st.sampled_from(["Bundle", "MedicationRequest", "Patient", "collection",
                                    "active", "order", "2026-11-20"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(fhir_keys, children, max_size=5),
    max_leaves=40,
)


def assert_sane(report: ValidationReport) -> None:
    assert isinstance(report, ValidationReport)
    assert not report.extra.get("internal_error"), report.findings
    for finding in report.findings:
        assert finding.rule and finding.diagnostics
        assert finding.severity in (Severity.ERROR, Severity.WARNING)
    outcome = report.to_operation_outcome()
    json.dumps(outcome)  # serialisable
    assert outcome["issue"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_never_raises(formulary, value: Any) -> None:
    assert_sane(validate_bundle(json.dumps(value), formulary, now=NOW))
    if isinstance(value, dict):
        assert_sane(validate_bundle(value, formulary, now=NOW))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fhir_like)
def test_fhir_shaped_json_never_raises(formulary, value: Any) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": value}]}
    assert_sane(validate_bundle(bundle, formulary, now=NOW))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_raise(formulary, body: bytes) -> None:
    report = validate_bundle(body, formulary, now=NOW)
    assert_sane(report)


def _leaves(value: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))] + [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))] + [path]
    return [path]


def _set(root: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    target = root
    for key in path[:-1]:
        target = target[key]
    if new is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = new
    return root


_DELETE = object()
_BASES = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(EXAMPLES.glob("*.json"))]


def _same_kind(old: Any) -> st.SearchStrategy[Any]:
    if isinstance(old, bool):
        return st.booleans()
    if isinstance(old, int | float):
        return (st.integers(-10**30, 10**30) | st.floats(allow_nan=False, allow_infinity=False)
                | st.decimals(allow_nan=False, allow_infinity=False, places=3))
    if isinstance(old, str):
        return st.from_regex(r"[A-Za-z0-9][A-Za-z0-9\-.:/+]{0,29}", fullmatch=True) | st.text(
            max_size=10) | st.sampled_from([
            "", "2026-02-29", "2026-11-20T10:00:00+14:00", "9999-12-31", "0001-01-01",
            "CD2", "CD9", "Patient/x", "urn:uuid:x", "active", "original-order", "mg", "ug",
            "h", "wk", "d", "ml", "1" * 40, "C1234567", "+", "J01C"])
    return json_values


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(_BASES))), st.data())
def test_mutated_examples_never_raise(formulary, base: int, data) -> None:
    bundle = copy.deepcopy(_BASES[base])
    for _ in range(data.draw(st.integers(1, 4))):
        # resourceType changes are covered above; here the resources should mostly parse.
        paths = [p for p in _leaves(bundle) if p and p[-1] != "resourceType"]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        target = bundle
        for key in path:
            target = target[key]
        # Mostly same-kind changes, so that many bundles still parse and reach the rules.
        mode = data.draw(st.sampled_from(["delete", "same", "same", "same", "same", "any"]))
        new = (_DELETE if mode == "delete" else data.draw(
            _same_kind(target) if mode == "same" else json_values))
        bundle = _set(bundle, path, new)
    assert_sane(validate_bundle(bundle, formulary, now=NOW))


@pytest.mark.parametrize("body", [
    "[" * 100_000 + "]" * 100_000,
    '{"a":' * 50_000 + "1" + "}" * 50_000,
    "1" * 5000,
    '{"resourceType": "Bundle", "type": "collection", "entry": [' + "[" * 500 + "]" * 500
    + "]}",
])
def test_deep_or_huge_json(check, body: str) -> None:
    report = check(body)
    assert rules(report) == ["bundle-invalid"]


def test_deeply_nested_mapping(check) -> None:
    nested: dict[str, Any] = {}
    node = nested
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    assert rules(check({"resourceType": "Bundle", "type": "collection",
                        "extension": [nested]})) == ["bundle-invalid"]


def test_extreme_numbers(check) -> None:
    mr = item(dose=Decimal("1E+30"), frequency=10**20, period=Decimal("1E-30"), qty=10**25)
    report = check(rx(mr))
    assert_sane(report)
    mr = item(dose=1e308, frequency=1e308, qty=1e-308)
    assert_sane(check(rx(mr)))


def test_internal_error_is_reported_not_raised(formulary, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    # A handler on the engine's own logger: the app's logging set-up may stop propagation.
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    monkeypatch.setattr(engine_module._Check, "run", broken)
    engine_module.logger.addHandler(handler)
    try:
        report = validate_bundle(rx(), formulary, now=NOW)
    finally:
        engine_module.logger.removeHandler(handler)
    assert rules(report) == ["bundle-invalid"] and not report.is_valid
    assert report.extra["internal_error"] is True
    assert "boom" not in report.findings[0].diagnostics
    assert [r.exc_info[0] for r in records if r.exc_info] == [RuntimeError]


def test_many_current_medicines_stay_fast(check) -> None:
    from .builders import ASPIRIN_75, statement

    current = tuple(statement(ASPIRIN_75) for _ in range(400))
    start = time.perf_counter()
    report = check(rx(*[item(WARFARIN_5) for _ in range(20)], extra=current))
    assert time.perf_counter() - start < 15
    assert rules(report).count("interaction") == 20 * 400


def test_many_items_stay_fast(check) -> None:
    items = [item(WARFARIN_5) for _ in range(60)]
    start = time.perf_counter()
    report = check(rx(*items))
    elapsed = time.perf_counter() - start
    assert len(report.parsed.items) == 60
    assert rules(report).count("duplicate-therapy") == 60 * 59 // 2
    assert elapsed < 15  # generous: the machine is shared
