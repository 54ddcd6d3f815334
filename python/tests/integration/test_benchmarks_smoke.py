"""The benchmark runner still runs: every Flame workload at tiny sizes, nothing recorded
(the measurements themselves are run by hand; see benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_benchmark_runner_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '"workload": "noop"' in proc.stdout, proc.stdout[-2000:]


def test_fairness_smoke() -> None:
    """``fairness.py`` end to end on Flame at tiny sizes (A 40 tasks, B 10): every metric
    comes out, and B, submitted behind A's backlog, is not left waiting for all of it."""
    proc = subprocess.run(
        [sys.executable, "benchmarks/fairness.py", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = {r["metric"]: r["value"] for r in map(json.loads, proc.stdout.splitlines())}
    assert set(got) == {"b_alone", "b_with_a", "a_total", "b_slowdown"}, got
    assert 0 < got["b_with_a"] < got["a_total"], got
