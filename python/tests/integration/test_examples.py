"""The examples run as scripts on their own embedded cluster and leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _procs import session_members, wait_until_gone

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FLAME_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its executors share this session id: easy to find
    )
    try:
        out, err = proc.communicate(timeout=100)
    finally:
        proc.kill()
    if Path("/proc").is_dir():
        left = wait_until_gone(lambda: session_members(proc.pid))
        assert not left, f"{name} left processes behind: {left}"
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{out}\n{err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("tasks", ["20"])
def test_pi(tasks: str) -> None:
    result = run_example("pi.py", "--tasks", tasks, "--samples", "200000")
    estimate = float(result.stdout.split("pi ~ ")[1].split()[0])
    assert abs(estimate - 3.14159) < 0.01
    assert f"{tasks}/{tasks}" in result.stderr, "the progress bar did not reach the total"


def test_pi_without_progress_bar() -> None:
    result = run_example("pi.py", "--tasks", "4", "--samples", "1000", "--no-progress")
    assert "pi ~ " in result.stdout
    assert "/4" not in result.stderr


def test_matrix() -> None:
    result = run_example("matrix.py", "--size", "6")
    assert "matches numpy" in result.stdout
