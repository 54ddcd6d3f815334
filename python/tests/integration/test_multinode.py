"""A cluster split across processes as it would be across hosts: ``flame-daemon head`` and
two ``flame-daemon node`` processes on loopback. Tasks spread over both nodes, and
stopping everything with SIGTERM leaves no process behind."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import free_port, join_args, start_daemon, stop_daemon

import flame


@pytest.fixture
def head_and_two_nodes(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    state = str(tmp_path / "state")
    head = start_daemon("head", "--port", str(port), "--state-dir", state, port=port)
    address = f"http://127.0.0.1:{port}"
    nodes = [
        start_daemon(
            "node", "--head", address, "--slots", "1", "--name", name,
            "--python", sys.executable, "--work-dir", str(tmp_path / name),
            *join_args(address, state, tmp_path / f"{name}-node"),
        )
        for name in ("n1", "n2")
    ]  # fmt: skip
    try:
        yield address
    finally:
        for proc in [*nodes, head]:
            stop_daemon(proc)


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
