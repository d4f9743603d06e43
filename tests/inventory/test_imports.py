import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_inventory_stays_light() -> None:
    code = (
        "import sys, inventory, inventory.policy, inventory.backtest; "
        "heavy = ('flask', 'sqlalchemy', 'rq', 'redis', 'pharmacy', 'routing', 'statsforecast'); "
        "bad = sorted(m for m in heavy if m in sys.modules); "
        "assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
