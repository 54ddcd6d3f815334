"""Three ``flame-daemon node`` processes on their own loopback addresses (127.0.0.2,
127.0.0.3, 127.0.0.4, via ``--bind``) join one head, as nodes on three hosts would: the head
sees three distinct peers with their resources, tasks spread over all of them, a node that
joins late picks up work of a running session, and a node drained mid-run (SIGTERM, or
``flame-daemon drain`` from anywhere) finishes what it was sent, hands the rest back and
exits 0 — every task completes exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _procs import daemon_command, free_port, join_args, start_daemon, stop_daemon

import flame

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.x beyond .1 is Linux")


class Where(flame.FlameService):
    """Sleeps, appends its input to ``$FLAME_TEST_LOG`` when done, answers its node's name
    (the last part of its working directory) and its input."""

    def on_task_invoke(self, ctx: flame.TaskContext) -> bytes:
        import os
        import time

        seconds, _, index = ctx.input.decode().partition(":")
        time.sleep(float(seconds))
        log = os.environ.get("FLAME_TEST_LOG")
        if log:
            with open(log, "a") as f:
                f.write(index + "\n")
        return f"{os.path.basename(os.getcwd())}:{index}".encode()


class Cluster:
    """A head on 127.0.0.1 and nodes started and stopped on demand."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "done.log"
        self.head = start_daemon(
            "head", "--port", str(self.port), "--state-dir", str(tmp / "state"), port=self.port
        )
        self.nodes: dict[str, subprocess.Popen[str]] = {}

    def add_node(self, name: str, bind: str, slots: int = 1) -> None:
        os.environ["FLAME_TEST_LOG"] = str(self.log)  # inherited by the node's executors
        self.nodes[name] = start_daemon(
            "node", "--head", self.address, "--slots", str(slots), "--name", name,
            "--bind", bind, "--python", sys.executable, "--work-dir", str(self.tmp / name),
            *join_args(self.address, self.tmp / "state", self.tmp / f"{name}-node"),
        )  # fmt: skip

    def stop(self) -> None:
        for proc in [*self.nodes.values(), self.head]:
            if proc.poll() is None:
                stop_daemon(proc)
        os.environ.pop("FLAME_TEST_LOG", None)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)
    return found


def alive(conn: Any) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in conn.cluster_info()["nodes"] if n["alive"]}


def run(conn: Any, seconds: float, n: int) -> tuple[Any, list[Any]]:
    """Open a session of ``Where`` that may use every slot, and submit ``n`` tasks."""
    s = conn.create_session("where", slots=0)
    return s, s.run_tasks([f"{seconds}:{i}".encode() for i in range(n)])


def where(futures: list[Any]) -> list[tuple[str, int]]:
    out = []
    for f in futures:
        node, _, index = f.result(timeout=60).decode().partition(":")
        out.append((node, int(index)))
    return out


def drain_command(address: str, node: str) -> subprocess.CompletedProcess[str]:
    """Run ``flame-daemon drain`` as an operator would."""
    args = ["drain", "--head", address, "--node", node]
    return subprocess.run([*daemon_command(), *args], capture_output=True, text=True, timeout=60)


def three_nodes(c: Cluster, slots: int = 1) -> None:
    for i, name in enumerate(("n1", "n2", "n3")):
        c.add_node(name, f"127.0.0.{i + 2}", slots)


def test_nodes_report_resources_and_tasks_spread(cluster: Cluster) -> None:
    three_nodes(cluster, slots=2)
    with flame.connect(cluster.address) as conn:
        nodes = wait_for("three nodes join", lambda: len(alive(conn)) == 3 and alive(conn))
        hosts = {name: n["address"].rsplit(":", 1)[0] for name, n in nodes.items()}
        assert hosts == {"n1": "127.0.0.2", "n2": "127.0.0.3", "n3": "127.0.0.4"}, hosts
        for n in nodes.values():
            assert n["slots"] == 2 and n["cpus"] >= 1 and not n["draining"], n
            assert n["memory_total"] > 0 and 0 < n["memory_available"] <= n["memory_total"], n
        conn.register_application("where", Where)
        session, futures = run(conn, 0.1, 36)
        with session:
            ran = where(futures)
        assert {node for node, _ in ran} == {"n1", "n2", "n3"}, ran


def test_a_node_started_later_picks_up_work(cluster: Cluster) -> None:
    cluster.add_node("n1", "127.0.0.2")
    cluster.add_node("n2", "127.0.0.3")
    with flame.connect(cluster.address) as conn:
        wait_for("two nodes join", lambda: len(alive(conn)) == 2)
        conn.register_application("where", Where)
        session, futures = run(conn, 0.2, 40)
        with session:
            wait_for("the session is running", lambda: cluster.log.exists())
            cluster.add_node("n3", "127.0.0.4")
            ran = where(futures)
        counts = Counter(node for node, _ in ran)
        assert counts["n3"] > 0, f"the late node ran nothing: {counts}"


def drained_mid_run(cluster: Cluster, drain: Callable[[], None]) -> None:
    three_nodes(cluster)
    with flame.connect(cluster.address) as conn:
        wait_for("three nodes join", lambda: len(alive(conn)) == 3)
        conn.register_application("where", Where)
        session, futures = run(conn, 0.2, 45)
        with session:
            wait_for("n2 is busy", lambda: alive(conn)["n2"]["busy"] > 0)
            drain()
            # It exits 0 by itself once its executors are gone.
            assert cluster.nodes["n2"].wait(timeout=30) == 0, cluster.nodes["n2"].stderr
            left = wait_for("n2 leaves", lambda: "n2" not in alive(conn) and alive(conn))
            assert set(left) == {"n1", "n3"}
            ran = where(futures)
    assert sorted(i for _, i in ran) == list(range(45)), "every task has one result"
    done = Counter(int(line) for line in cluster.log.read_text().split())
    twice = done - Counter(range(45))
    assert done == Counter(range(45)), f"tasks completed more than once: {twice}"
    counts = Counter(node for node, _ in ran)
    assert counts["n2"] > 0 and counts["n1"] + counts["n3"] > counts["n2"], counts


def test_sigterm_drains_a_node_and_no_task_is_lost_or_run_twice(cluster: Cluster) -> None:
    drained_mid_run(cluster, lambda: cluster.nodes["n2"].send_signal(signal.SIGTERM))


def test_flame_daemon_drain_empties_a_node_remotely(cluster: Cluster) -> None:
    def drain() -> None:
        out = drain_command(cluster.address, "n2")
        assert out.returncode == 0, out.stderr
        assert "drained" in out.stdout, out.stdout

    drained_mid_run(cluster, drain)


def test_draining_an_unknown_node_names_the_problem(cluster: Cluster) -> None:
    cluster.add_node("n1", "127.0.0.2")
    with flame.connect(cluster.address) as conn:
        wait_for("n1 joins", lambda: alive(conn))
    out = drain_command(cluster.address, "nope")
    assert out.returncode == 1
    assert "nope" in out.stderr and "n1" in out.stderr, out.stderr
