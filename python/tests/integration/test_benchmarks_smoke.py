"""The benchmark runner still runs: every Flame workload at tiny sizes, nothing recorded
(the measurements themselves are run by hand; see benchmarks/README.md)."""

from __future__ import annotations

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
