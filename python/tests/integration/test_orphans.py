"""Processes die with their owner: executors (and what their tasks started) never outlive the
daemon, the node or the script that runs them, and an embedded cluster's temporary state
directory does not outlive its script either.

Each task here starts a ``sleep 1000`` child with plain ``subprocess.Popen`` and writes the
pids (``executor-PID``, ``child-PID``) into a marker directory, so the test knows them. The
checks wait on pid liveness with a deadline; whatever a test started is killed at its end,
pass or fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import free_port, join_args, session_members, start_daemon, stop_daemon

import flame
from flame import api

# How long the kernel, the node and the executors get to take a process down.
DEADLINE = 10.0

HOLD = """
import os, subprocess, sys, time
from pathlib import Path
import flame

@flame.service(max_retries=0)
def hold(marker_dir):
    child = subprocess.Popen(["sleep", "1000"])
    Path(marker_dir, f"child-{child.pid}").touch()
    Path(marker_dir, f"executor-{os.getpid()}").touch()
    time.sleep(1000)

marker_dir, address = sys.argv[1], sys.argv[2]
if address == "embedded":
    flame.init(slots=1)
    Path(marker_dir, "state_dir").write_text(flame.api.runtime().temp_dir)
else:
    flame.init(address)
hold(marker_dir).result()
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has exited: it only waits to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def still_alive(pids: list[int], timeout: float = DEADLINE) -> list[int]:
    """Waits until every pid is gone or ``timeout`` passes; the ones still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def task_pids(markers: Path, watch: subprocess.Popen[str] | None = None) -> tuple[int, int]:
    """The (executor, child) pids the running task wrote; fails if ``watch`` exits first."""
    deadline = time.monotonic() + 60
    while True:
        names = [p.name for p in markers.iterdir()]
        executor = [int(n.split("-")[1]) for n in names if n.startswith("executor-")]
        child = [int(n.split("-")[1]) for n in names if n.startswith("child-")]
        if executor and child:
            return executor[0], child[0]
        if watch is not None and watch.poll() is not None:
            raise AssertionError(f"the client exited early: {watch.communicate()}")
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str] | int]]:
    """Processes (Popen) and pids a test started: all killed at its end, with what the
    Popen'ed ones left in their POSIX sessions."""
    procs: list[subprocess.Popen[str] | int] = []
    yield procs
    for proc in procs:
        if isinstance(proc, int):
            kill_all([proc])
            continue
        left = [pid for pid, _ in session_members(proc.pid)]
        proc.kill()
        proc.communicate()
        kill_all(left)


def hold_in(
    address: str, markers: Path, started: list[subprocess.Popen[str] | int]
) -> tuple[int, int]:
    """Runs a client that holds a task at ``address`` (or an embedded cluster); the task's
    (executor, child) pids, registered for cleanup."""
    client = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(markers), address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    started.append(client)
    executor, child = task_pids(markers, client)
    started.extend([executor, child])
    assert alive(executor) and alive(child)
    return executor, child


def start(args: list[str], started: list[subprocess.Popen[str] | int], port: int | None = None):
    proc = start_daemon(*args, port=port)
    started.append(proc)
    return proc


def test_a_killed_daemon_takes_its_executors_and_their_children(
    tmp_path: Path, markers: Path, started: list[subprocess.Popen[str] | int]
) -> None:
    port = free_port()
    daemon = start(
        ["start", "--host", "127.0.0.1", "--port", str(port), "--http-port", "0",
         "--slots", "1", "--state-dir", str(tmp_path / "state"), "--python", sys.executable],
        started, port,
    )  # fmt: skip
    executor, child = hold_in(f"127.0.0.1:{port}", markers, started)
    daemon.kill()
    assert not still_alive([executor, child]), "the executor or its child outlived the daemon"


def test_a_killed_node_takes_its_executors_and_their_children(
    tmp_path: Path, markers: Path, started: list[subprocess.Popen[str] | int]
) -> None:
    port = free_port()
    head = start(
        ["head", "--host", "127.0.0.1", "--port", str(port), "--http-port", "0",
         "--state-dir", str(tmp_path / "state")],
        started, port,
    )  # fmt: skip
    node = start(
        [
            "node",
            "--head",
            f"http://127.0.0.1:{port}",
            "--slots",
            "1",
            "--python",
            sys.executable,
            *join_args(f"http://127.0.0.1:{port}", tmp_path / "state", tmp_path / "node-state"),
        ],
        started,
    )
    executor, child = hold_in(f"127.0.0.1:{port}", markers, started)
    node.kill()
    assert not still_alive([executor, child]), "the executor or its child outlived its node"
    started.remove(head)
    stop_daemon(head)  # the head is unharmed and stops cleanly


def test_a_killed_script_takes_its_embedded_cluster_and_its_state_dir(
    markers: Path, started: list[subprocess.Popen[str] | int]
) -> None:
    executor, child = hold_in("embedded", markers, started)
    state_dir = Path((markers / "state_dir").read_text())
    assert state_dir.is_dir() and state_dir.name.startswith("flame-")
    script = started[0]
    assert isinstance(script, subprocess.Popen)
    script.kill()
    assert not still_alive([executor, child]), "the executor or its child outlived the script"
    # The next embedded cluster sweeps the directory of the dead one, and not a live one's
    # (this process's own cluster is alive).
    next_start = subprocess.run(
        [sys.executable, "-c", "import flame; flame.init(slots=1); flame.shutdown()"],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert next_start.returncode == 0, next_start.stderr
    assert not state_dir.exists(), "the killed script's state dir was not swept"
    own = api.runtime().temp_dir
    assert own is not None and Path(own).is_dir(), "a live cluster's state dir was swept"


# ------------------------------------------------- a task's children, within one cluster


def spawn_child_and_sleep(marker_dir: str) -> None:
    child = subprocess.Popen(["sleep", "1000"])
    Path(marker_dir, f"child-{child.pid}").touch()
    Path(marker_dir, f"executor-{os.getpid()}").touch()
    time.sleep(1000)


@flame.service(max_retries=0)
def spawn_and_hold(marker_dir: str) -> None:
    spawn_child_and_sleep(marker_dir)


@flame.service(max_retries=0, timeout=2.0)
def spawn_and_overrun(marker_dir: str) -> None:
    spawn_child_and_sleep(marker_dir)


@flame.service(max_retries=0)
class Holder:
    def hold(self, marker_dir: str) -> None:
        spawn_child_and_sleep(marker_dir)


def test_a_cancelled_tasks_children_are_killed(
    markers: Path, started: list[subprocess.Popen[str] | int]
) -> None:
    fut = spawn_and_hold(str(markers))
    executor, child = task_pids(markers)
    started.extend([executor, child])
    assert fut.cancel()
    assert not still_alive([child]), "the cancelled task's child lives on"


def test_a_timed_out_tasks_children_are_killed(
    markers: Path, started: list[subprocess.Popen[str] | int]
) -> None:
    fut = spawn_and_overrun(str(markers))
    executor, child = task_pids(markers)
    started.extend([executor, child])
    with pytest.raises(flame.TaskTimeoutError):
        fut.result(timeout=30)
    assert not still_alive([child]), "the timed-out task's child lives on"


def test_a_closed_sessions_running_children_are_killed(
    markers: Path, started: list[subprocess.Popen[str] | int]
) -> None:
    holder = Holder()
    holder.hold(str(markers))
    executor, child = task_pids(markers)
    started.extend([executor, child])
    holder.close()
    assert not still_alive([child]), "the closed session's task's child lives on"
