import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "inventory"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inventory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_forecast_writes_the_specified_columns(tmp_path: Path) -> None:
    out = tmp_path / "fc.csv"
    done = run_cli(
        "forecast",
        "--input",
        str(DATA / "usaid_monthly_small.csv"),
        "--horizon",
        "2",
        "--output",
        str(out),
        "--jobs",
        "1",
    )
    assert done.returncode == 0, done.stderr
    assert "series" in done.stderr  # progress goes to stderr
    assert done.stdout == ""
    fc = pd.read_csv(out)
    assert list(fc.columns) == ["unique_id", "ds", "forecast", "lo_80", "hi_80", "lo_95", "hi_95"]
    assert len(fc) == 6 * 2
    assert (fc.drop(columns=["unique_id", "ds"]) >= 0).all().all()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("unique_id,ds\na,2024-01-01\n", "missing column"),
        ("unique_id,ds,y\na,2024-01-01,-3\n", "negative demand"),
        ("unique_id,ds,y\na,not-a-date,3\n", "unparseable date"),
        ("unique_id,ds,y\na,2024-01-01,\n", "missing demand"),
        ("unique_id,ds,y\na,2024-01-01,lots\n", "non-numeric demand"),
        ("", "cannot read"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "history.csv"
    path.write_text(content)
    done = run_cli(
        "forecast", "--input", str(path), "--horizon", "3", "--output", str(tmp_path / "o.csv")
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
    assert not (tmp_path / "o.csv").exists()


def test_missing_input_file_exits_2(tmp_path: Path) -> None:
    done = run_cli(
        "forecast",
        "--input",
        str(tmp_path / "nope.csv"),
        "--horizon",
        "3",
        "--output",
        str(tmp_path / "o.csv"),
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("forecast", "--input", "h.csv", "--horizon", "x", "--output", "o.csv"),
         "--horizon: invalid int value: 'x'"),
        (("forecast", "--input", "h.csv", "--output", "o.csv"), "required: --horizon"),
        (("forecast", "--input", "h.csv", "--horizon", "3", "--output", "o.csv", "--freq", "Q"),
         "--freq: invalid choice: 'Q'"),
        ((), "required: command"),
    ],
)
def test_a_usage_mistake_exits_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "--help" in lines[0]
