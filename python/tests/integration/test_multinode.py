"""A cluster split across processes as it would be across hosts: ``flame-daemon head`` and
two ``flame-daemon node`` processes on loopback. Tasks spread over both nodes, and
stopping everything with SIGTERM leaves no process behind."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import session_members, wait_until_gone

import flame


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon(*args: str) -> subprocess.Popen[str]:
    exe = shutil.which("flame-daemon")
    command = [exe] if exe else [sys.executable, "-c", "import flame.cli as c; c.daemon_main()"]
    return subprocess.Popen(
        [*command, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, f"{proc.args} exited with {proc.returncode}"
    left = wait_until_gone(lambda: session_members(proc.pid))
    assert not left, f"{proc.args[1]} left processes behind: {left}"


@pytest.fixture
def head_and_two_nodes(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    head = daemon("head", "--port", str(port), "--state-dir", str(tmp_path / "state"))
    nodes: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            assert head.poll() is None, f"head exited: {head.stderr.read()}"  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the head did not start listening"
                time.sleep(0.1)
        address = f"http://127.0.0.1:{port}"
        for name in ("n1", "n2"):
            nodes.append(
                daemon(
                    "node",
                    "--head",
                    address,
                    "--slots",
                    "1",
                    "--name",
                    name,
                    "--python",
                    sys.executable,
                    "--work-dir",
                    str(tmp_path / name),
                )
            )
        yield address
    finally:
        for proc in [*nodes, head]:
            stop(proc)


class Where(flame.FlameService):
    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        import os
        import time

        time.sleep(0.05)
        return os.getcwd().encode()


def test_tasks_spread_across_nodes(head_and_two_nodes: str) -> None:
    with flame.connect(head_and_two_nodes) as conn:
        deadline = time.monotonic() + 30
        while len([n for n in conn.cluster_info()["nodes"] if n["alive"]]) < 2:
            assert time.monotonic() < deadline, "both nodes register"
            time.sleep(0.1)
        conn.register_application("where", Where)
        with conn.create_session("where", slots=2) as session:
            dirs = {f.result(timeout=60) for f in session.run_tasks([b""] * 20)}
        names = {Path(d.decode()).name for d in dirs}
        assert names == {"n1", "n2"}, f"tasks ran in {names}"
        nodes = {n["name"]: n for n in conn.cluster_info()["nodes"]}
        assert set(nodes) == {"n1", "n2"} and all(n["slots"] == 1 for n in nodes.values())
