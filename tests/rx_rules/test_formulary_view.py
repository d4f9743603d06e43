"""The FormularyView from the database matches the CSV files; the engine needs no SQLAlchemy."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from pharmacy.services.rx_rules import load_formulary_view, read_formulary_csv, validate_bundle
from pharmacy.services.rx_rules.formulary_csv import parse_cd_schedule

from .builders import NOW, WARFARIN_5, item, rules, rx


def test_csv_view_reads_every_file() -> None:
    view = read_formulary_csv()
    assert len(view.entries) > 100 and len(view.interactions) > 100
    methadone = view.entries["36120811000001107"]
    assert methadone.cd_schedule == 2 and methadone.strength == "1mg/ml"
    assert view.entries["39696211000001108"].max_daily_dose_mg == 2.5
    assert view.lookup("322236009").code == "42109611000001109"  # a previous VPID
    assert view.lookup("000") is None


def test_parse_cd_schedule() -> None:
    assert [parse_cd_schedule(s) for s in ("CD2", "cd3", " CD5 ", "", None, "CD", "CD7",
                                           "X")] == [2, 3, 5, None, None, None, None, None]


def test_load_formulary_view_from_database(db) -> None:
    from sqlalchemy import select

    from pharmacy.models import InteractionRule, Medicine
    from pharmacy.services.formulary import load_formulary

    load_formulary(db.session)
    view = load_formulary_view(db.session)
    expected = read_formulary_csv()
    assert set(view.entries) == set(expected.entries)
    for code, entry in expected.entries.items():
        loaded = view.entries[code]
        assert loaded.medicine_id is not None
        assert dataclasses.replace(loaded, medicine_id=None) == entry
    assert view.previous_codes == expected.previous_codes
    key = lambda i: (i.a, i.b)  # noqa: E731
    assert sorted(view.interactions, key=key) == sorted(expected.interactions, key=key)

    # Data-driven: a pharmacy's edits change the answers without a code change.
    bundle = rx(item(WARFARIN_5), item("42291811000001106"))  # warfarin + aspirin
    assert rules(validate_bundle(bundle, view, now=NOW)) == ["interaction"]
    rule = db.session.scalars(select(InteractionRule).where(
        InteractionRule.substance_a == "warfarin", InteractionRule.substance_b == "aspirin")).one()
    db.session.delete(rule)
    warfarin = db.session.scalars(select(Medicine).where(Medicine.code == WARFARIN_5)).one()
    warfarin.max_daily_dose_mg = 4
    db.session.flush()
    edited = load_formulary_view(db.session)
    assert rules(validate_bundle(rx(item(WARFARIN_5), item("42291811000001106")), edited,
                                 now=NOW)) == ["dose-above-maximum"]
    warfarin.is_active = False
    db.session.flush()
    assert WARFARIN_5 not in load_formulary_view(db.session).entries


def test_engine_imports_without_sqlalchemy() -> None:
    code = ("import sys; import pharmacy.services.rx_rules as r; "
            "assert callable(r.validate_bundle) and callable(r.load_formulary_view); "
            "bad = [m for m in ('sqlalchemy', 'flask_sqlalchemy', 'psycopg') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
