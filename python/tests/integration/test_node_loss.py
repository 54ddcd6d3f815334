"""An executor-manager node killed outright (SIGKILL of ``flame-daemon node``): the session
manager notices, its executors are told to stop, and their tasks run on the other node."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from _procs import free_port, session_members, start_daemon, stop_daemon, wait_until_gone

import flame


class Slow(flame.FlameService):
    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        import os
        import time

        time.sleep(0.05)
        return ctx.input + b"@" + os.path.basename(os.getcwd()).encode()


def test_tasks_of_a_killed_node_finish_on_the_other(tmp_path: Path) -> None:
    port = free_port()
    state = str(tmp_path / "state")
    head = start_daemon("head", "--port", str(port), "--state-dir", state, port=port)
    address = f"http://127.0.0.1:{port}"
    nodes = {
        name: start_daemon(
            "node", "--head", address, "--slots", "1", "--name", name,
            "--python", sys.executable, "--work-dir", str(tmp_path / name),
        )
        for name in ("doomed", "survivor")
    }  # fmt: skip
    try:
        with flame.connect(address) as conn:
            deadline = time.monotonic() + 30
            while len(conn.cluster_info()["nodes"]) < 2:
                assert time.monotonic() < deadline, "both nodes register"
                time.sleep(0.1)
            conn.register_application("slow", Slow)
            with conn.create_session("slow", slots=2) as session:
                futs = session.run_tasks(b"%d" % i for i in range(60))
                # Wait until the doomed node has done some work, then kill it outright.
                while not any(f.done() and f.result().endswith(b"@doomed") for f in futs):
                    assert time.monotonic() < deadline, "the doomed node never ran a task"
                    time.sleep(0.02)
                doomed = nodes.pop("doomed")
                os.killpg(doomed.pid, signal.SIGKILL)
                doomed.wait(timeout=10)
                results = [f.result(timeout=60) for f in futs]
            assert [r.split(b"@")[0] for r in results] == [b"%d" % i for i in range(60)]
            assert results[-1].endswith(b"@survivor")
            alive = [n["name"] for n in conn.cluster_info()["nodes"] if n["alive"]]
            assert alive == ["survivor"]
        # The killed node's executors were told to stop by the session manager.
        left = wait_until_gone(lambda: session_members(doomed.pid))
        assert not left, f"executors of the killed node are still running: {left}"
    finally:
        for proc in [*nodes.values(), head]:
            stop_daemon(proc)


def test_a_silent_node_is_declared_lost_by_missed_heartbeats(tmp_path: Path) -> None:
    """SIGSTOP keeps the node's connection open but silences it: only the missed heartbeats
    (5 s) tell the session manager, which then runs its tasks elsewhere. Woken up, the node
    finds itself dropped, stops its executors and rejoins."""
    port = free_port()
    state = str(tmp_path / "state")
    head = start_daemon("head", "--port", str(port), "--state-dir", state, port=port)
    address = f"http://127.0.0.1:{port}"
    nodes = {
        name: start_daemon(
            "node", "--head", address, "--slots", "1", "--name", name,
            "--python", sys.executable, "--work-dir", str(tmp_path / name),
        )
        for name in ("frozen", "survivor")
    }  # fmt: skip
    frozen = nodes["frozen"]
    try:
        with flame.connect(address) as conn:
            deadline = time.monotonic() + 30
            while len(conn.cluster_info()["nodes"]) < 2:
                assert time.monotonic() < deadline, "both nodes register"
                time.sleep(0.1)
            conn.register_application("slow", Slow)
            with conn.create_session("slow", slots=2) as session:
                futs = session.run_tasks(b"%d" % i for i in range(40))
                while not any(f.done() and f.result().endswith(b"@frozen") for f in futs):
                    assert time.monotonic() < deadline, "the frozen node never ran a task"
                    time.sleep(0.02)
                # Freeze the node and its executors: connections stay open, nothing answers.
                for pid, _ in session_members(frozen.pid):
                    os.kill(pid, signal.SIGSTOP)
                started = time.monotonic()
                results = [f.result(timeout=60) for f in futs]
                assert time.monotonic() - started < 30
            assert [r.split(b"@")[0] for r in results] == [b"%d" % i for i in range(40)]
            alive = {n["name"] for n in conn.cluster_info()["nodes"] if n["alive"]}
            assert alive == {"survivor"}
    finally:
        for pid, _ in session_members(frozen.pid):
            os.kill(pid, signal.SIGCONT)
        for proc in [*nodes.values(), head]:
            stop_daemon(proc)
