"""An executor-manager node lost: killed outright (SIGKILL of ``flame-daemon node``) or
frozen (SIGSTOP, only missed heartbeats tell). The session manager notices, its executors
are told to stop, and their tasks run on the other node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _procs import free_port, join_args, session_members, start_daemon, stop_daemon, wait_until_gone

import flame


class Slow(flame.FlameService):
    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        import os
        import time

        time.sleep(0.05)
        return ctx.input + b"@" + os.path.basename(os.getcwd()).encode()


@contextmanager
def head_and_nodes(
    tmp_path: Path, names: tuple[str, ...]
) -> Iterator[tuple[str, dict[str, subprocess.Popen[str]]]]:
    """A head and one single-slot node per name (working in ``tmp_path/name``); every
    process still in the dict at the end is stopped and must leave nothing behind."""
    port = free_port()
    state = str(tmp_path / "state")
    head = start_daemon("head", "--port", str(port), "--state-dir", state, port=port)
    address = f"http://127.0.0.1:{port}"
    nodes = {
        name: start_daemon(
            "node", "--head", address, "--slots", "1", "--name", name,
            "--python", sys.executable, "--work-dir", str(tmp_path / name),
            *join_args(address, state, tmp_path / f"{name}-node"),
        )
        for name in names
    }  # fmt: skip
    try:
        yield address, nodes
    finally:
        for proc in [*nodes.values(), head]:
            stop_daemon(proc)


def run_until(conn: flame.Connection, node: str, tasks: int) -> list[flame.Future]:
    """Start a session of ``tasks`` slow tasks over both nodes; return once ``node`` has
    finished one of them."""
    deadline = time.monotonic() + 30
    while len(conn.cluster_info()["nodes"]) < 2:
        assert time.monotonic() < deadline, "both nodes register"
        time.sleep(0.1)
    conn.register_application("slow", Slow)
    session = conn.create_session("slow", slots=2)
    futs = session.run_tasks(b"%d" % i for i in range(tasks))
    suffix = b"@" + node.encode()
    while not any(f.done() and f.result().endswith(suffix) for f in futs):
        assert time.monotonic() < deadline, f"node {node} never ran a task"
        time.sleep(0.02)
    return futs


def test_tasks_of_a_killed_node_finish_on_the_other(tmp_path: Path) -> None:
    with head_and_nodes(tmp_path, ("doomed", "survivor")) as (address, nodes):
        with flame.connect(address) as conn:
            futs = run_until(conn, "doomed", 60)
            doomed = nodes.pop("doomed")
            os.killpg(doomed.pid, signal.SIGKILL)  # the node only: executors have own groups
            doomed.wait(timeout=10)
            results = [f.result(timeout=60) for f in futs]
            assert [r.split(b"@")[0] for r in results] == [b"%d" % i for i in range(60)]
            assert results[-1].endswith(b"@survivor")
            alive = [n["name"] for n in conn.cluster_info()["nodes"] if n["alive"]]
            assert alive == ["survivor"]
        # The killed node's executors were told to stop by the session manager.
        left = wait_until_gone(lambda: session_members(doomed.pid))
        assert not left, f"executors of the killed node are still running: {left}"


def test_a_silent_node_is_declared_lost_by_missed_heartbeats(tmp_path: Path) -> None:
    """SIGSTOP keeps the node's connection open but silences it: only the missed heartbeats
    (5 s) tell the session manager, which then runs its tasks elsewhere. Woken up, the node
    finds itself dropped, stops its executors and rejoins."""
    with head_and_nodes(tmp_path, ("frozen", "survivor")) as (address, nodes):
        frozen = nodes["frozen"]
        try:
            with flame.connect(address) as conn:
                futs = run_until(conn, "frozen", 40)
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
