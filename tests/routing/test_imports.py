"""Dependency direction: routing is a pure library, solver imports live in their adapters."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.routing.helpers import REPO

ROUTING = REPO / "routing"


def test_import_routing_leaves_web_and_db_stacks_out() -> None:
    code = (
        "import sys, routing, routing.cli, routing.bench, routing.solve;"
        "bad = [m for m in ('flask', 'sqlalchemy', 'rq', 'redis', 'pharmacy', 'inventory')"
        " if m in sys.modules];"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def _importers(package: str) -> set[str]:
    pattern = re.compile(rf"^\s*(import|from)\s+{package}\b", re.MULTILINE)
    return {p.name for p in ROUTING.glob("*.py") if pattern.search(p.read_text())}


def test_solver_imports_stay_in_their_adapters() -> None:
    assert _importers("ortools") == {"_ortools.py"}
    assert _importers("pyvrp") == {"_pyvrp.py"}
