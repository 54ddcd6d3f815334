"""Whole-process behaviour, in subprocesses: auto-init, re-init after shutdown, cleanup at
exit, and a standalone ``flame-daemon`` reached by address."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import free_port, session_members, start_daemon, stop_daemon, wait_until_gone

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

SCRIPT = """
import flame

@flame.service
def inc(x):
    return x + 1

assert not flame.is_initialized()
print(inc(1).result(60))   # the first call starts an embedded cluster
flame.shutdown()
print(inc(2).result(60))   # a new one, with the function's session opened again
# no shutdown: the atexit hook stops the cluster
"""


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a Python process in its own session; check it left nothing running."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=100)
    finally:
        proc.kill()
    left = wait_until_gone(lambda: session_members(proc.pid))
    assert not left, f"processes left behind: {left}"
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{out}\n{err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FLAME_ADDRESS"}
    env.update(extra)
    return env


def test_auto_init_reinit_and_exit_cleanup() -> None:
    result = run(["-c", SCRIPT], env=clean_env())
    assert result.stdout.split() == ["2", "3"]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """A ``flame-daemon start`` process on a free port; stopped with SIGTERM."""
    port = free_port()
    proc = start_daemon(
        "start", "--host", "127.0.0.1", "--port", str(port), "--slots", "2",
        "--state-dir", str(tmp_path / "state"), "--python", sys.executable,
        port=port,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_daemon(proc)


def test_standalone_daemon(daemon: str) -> None:
    script = (
        "import flame; flame.init(); print(flame.nodes()[0]['slots'])\n"
        + SCRIPT.split("assert not")[0]
        + "print(flame.get(inc.map(range(5))))\n"
    )
    result = run(["-c", script], env=clean_env(FLAME_ADDRESS=daemon))
    assert result.stdout.split("\n")[:2] == ["2", "[1, 2, 3, 4, 5]"]
    result = run([str(EXAMPLES / "matrix.py"), "--size", "3", "--address", daemon], env=clean_env())
    assert "matches numpy" in result.stdout
