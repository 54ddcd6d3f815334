"""``python -m flame._executor``: its command line and its exit status on failure."""

from __future__ import annotations

import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flame._executor", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_arguments() -> None:
    result = run()
    assert result.returncode == 2
    assert "--address" in result.stderr


def test_unreachable_session_manager_exits_non_zero() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    result = run("--address", address, "--executor-id", "7")
    assert result.returncode == 1
    assert "flame executor 7" in result.stderr and address in result.stderr
