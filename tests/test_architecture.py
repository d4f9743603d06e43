"""Dependency direction (STYLE.md §2): the pure libraries never pull in the web stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_routing_and_inventory_import_without_flask_or_sqlalchemy() -> None:
    code = (
        "import routing, inventory, sys; "
        "bad = sorted(m for m in ('flask', 'sqlalchemy', 'rq', 'redis', 'pharmacy') "
        "if m in sys.modules); "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_importing_the_app_package_does_not_build_an_app_or_connect() -> None:
    code = (
        "import os; os.environ['DATABASE_URL'] = 'postgresql://nobody@127.0.0.1:1/none'; "
        "import pharmacy, pharmacy.models, pharmacy.jobs.stock, pharmacy.worker, sys; "
        "assert 'wsgi' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
