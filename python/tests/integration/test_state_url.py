"""A head keeping its state in PostgreSQL (`--state-url`, #13), driven from Python: the
benchmark script's smallest run starts `flame-daemon start --state-url` against a throw-away
server and runs no-op tasks through it and through a SQLite head. Skips, naming the reason,
where no PostgreSQL server can run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _postgres import PgUnavailable, bin_dir

ROOT = Path(__file__).resolve().parents[3]


def test_a_head_on_postgres_runs_tasks() -> None:
    try:
        bin_dir()
    except PgUnavailable as e:
        pytest.skip(str(e))
    proc = subprocess.run(
        [sys.executable, "benchmarks/state_engine.py", "--rounds", "1", "--tasks", "300"]
        + ["--latency", "30"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "postgres  median" in proc.stdout, proc.stdout
    assert "sqlite    median" in proc.stdout, proc.stdout
