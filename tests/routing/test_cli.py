"""The command line, run as outside checks run it: a separate `python -m routing` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from routing import problem_to_json
from tests.routing.helpers import DATA, REPO, line_problem


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "routing", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_solve_solomon_prints_the_spec_json_within_the_time_limit() -> None:
    started = time.monotonic()
    result = _run("solve", str(DATA / "solomon" / "C101.txt"), "--time-limit", "3", "--seed", "3")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"routes", "distance", "vehicles", "unserved", "feasible", "seconds"}
    assert out["feasible"] is True and out["unserved"] == []
    assert out["vehicles"] == len(out["routes"])
    customers = sorted(c for route in out["routes"] for c in route)
    assert customers == list(range(1, 101))  # customer numbers as in the file, depot omitted
    assert 827.3 <= out["distance"] <= 827.3 * 1.02
    assert out["distance"] == round(out["distance"], 1)
    # The limit covers start-up too; allow a little for exiting on a loaded machine.
    assert out["seconds"] <= 3.0 and elapsed <= 3.5


def test_solve_vrplib_uses_file_node_numbers_and_integer_distances() -> None:
    result = _run("solve", str(DATA / "cvrp_x" / "X-n101-k25.vrp"), "--time-limit", "3")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert sorted(c for route in out["routes"] for c in route) == list(range(2, 102))
    assert out["distance"] == int(out["distance"]) and out["distance"] >= 27591


def test_solve_our_json_format(tmp_path: Path) -> None:
    file = tmp_path / "day.json"
    data = problem_to_json(line_problem(), convention="cvrplib_nint")
    file.write_text(json.dumps(data))
    result = _run("solve", str(file), "--time-limit", "2")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["distance"] == 80.0 and out["feasible"] is True
    assert sorted(out["routes"][0]) == ["s-10", "s-20", "s10", "s20"]


def test_unreadable_input_exits_2_with_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("hello\nworld\n")
    broken = tmp_path / "broken.json"
    broken.write_text('{"depots": [}')
    truncated = tmp_path / "C101.txt"
    truncated.write_text((DATA / "solomon" / "C101.txt").read_text()[:200])
    for path in (garbage, broken, truncated, tmp_path / "missing.txt"):
        result = _run("solve", str(path), "--time-limit", "1")
        assert result.returncode == 2, (path, result.stdout)
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bench_prints_a_table_with_family_means(tmp_path: Path) -> None:
    (tmp_path / "solomon").mkdir()
    (tmp_path / "solomon" / "C101.txt").write_text((DATA / "solomon" / "C101.txt").read_text())
    bks = (DATA / "bks.csv").read_text().splitlines()
    rows = [bks[0], *[r for r in bks if r.startswith("C101,")]]
    (tmp_path / "bks.csv").write_text("\n".join(rows))
    result = _run("bench", str(tmp_path), "--time-limit", "2", "--family", "solomon")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("C101") and line.split()[7] == "true" for line in lines)
    summary = [line for line in lines if line.startswith("solomon ")]
    assert summary and float(summary[-1].split()[2]) < 2.0
