"""A head and three node processes bound to 127.0.0.2-.4 (three hosts as far as Flame can
tell), for the object tests across nodes (#12): the `cluster` fixture, and what those tests
read off the cluster (its metrics, each node's store directory and socket)."""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _procs import free_port, join_args, start_daemon, stop_daemon

import flame
from flame import api, objects

NODES = {"n1": "127.0.0.2", "n2": "127.0.0.3", "n3": "127.0.0.4"}


class Cluster:
    """A bare head and `nodes` (name: address); `store_mb`: each node's --object-store-mb
    (512 unless named)."""

    def __init__(
        self, tmp_path: Path, nodes: dict[str, str], store_mb: dict[str, int] | None = None
    ) -> None:
        self.port, self.http = free_port(), free_port()
        self.state = tmp_path / "state"
        self.head = start_daemon(
            "head", "--port", str(self.port), "--http-port", str(self.http),
            "--state-dir", str(self.state), port=self.port,
        )  # fmt: skip
        self.address = f"http://127.0.0.1:{self.port}"
        self.nodes = {}
        for name, ip in nodes.items():
            mb = (store_mb or {}).get(name, 512)
            self.nodes[name] = start_daemon(
                "node", "--head", self.address, "--bind", ip, "--slots", "1", "--name", name,
                "--python", sys.executable, "--work-dir", str(tmp_path / name),
                "--object-store-mb", str(mb),
                *join_args(self.address, self.state, tmp_path / f"{name}-node"),
            )  # fmt: skip

    def metric(self, name: str) -> float:
        token = (self.state / "admin.token").read_text().strip()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        text = urllib.request.urlopen(req, timeout=10).read().decode()
        values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
        return sum(values)

    def wait_metric(self, name: str, at_least: float, timeout: float = 20) -> float:
        """The metric once it reaches `at_least` (heartbeats bring nodes' counters to the
        head within a few seconds)."""
        deadline = time.monotonic() + timeout
        while (value := self.metric(name)) < at_least:
            assert time.monotonic() < deadline, f"{name} reaches {at_least} (is {value})"
            time.sleep(0.2)
        return value

    def memory_dir(self, name: str) -> str:
        """Node `name`'s object memory dir (its store runs in the daemon's own process)."""
        found = glob.glob(f"/dev/shm/flame-{os.geteuid()}/node-{self.nodes[name].pid}-*")
        if not found:  # no tmpfs at /dev/shm: the store is under the node's work dir
            found = glob.glob(f"{self.state.parent / name}/**/node.sock", recursive=True)
            found = [os.path.dirname(f) for f in found]
        assert len(found) == 1, f"one memory dir for {name}: {found}"
        return found[0]

    def node_id(self, name: str) -> int:
        return next(n["id"] for n in flame.cluster_info()["nodes"] if n["name"] == name)

    def stop(self) -> None:
        for proc in [*self.nodes.values(), self.head]:
            if proc.poll() is None:
                stop_daemon(proc)


def node_names() -> dict[int, str]:
    return {n["id"]: n["name"] for n in flame.cluster_info()["nodes"]}


@pytest.fixture
def store_mb() -> dict[str, int]:
    """Nodes' --object-store-mb by name; a test sets it with
    `@pytest.mark.parametrize("store_mb", [{"n3": 64}])`."""
    return {}


@contextlib.contextmanager
def running(
    tmp_path: Path, nodes: dict[str, str], store_mb: dict[str, int] | None = None
) -> Iterator[Cluster]:
    """A bare head and `nodes`, with this process as their client: on no node of theirs."""
    # This test's client talks to its own head: the session-wide embedded cluster steps
    # aside (as test_faults swaps runtimes) and comes back after.
    saved = api._runtime
    api._runtime = None
    c = Cluster(tmp_path, nodes, store_mb)
    try:
        flame.init(c.address)
        deadline = time.monotonic() + 30
        while len([n for n in flame.cluster_info()["nodes"] if n["alive"]]) < len(nodes):
            assert time.monotonic() < deadline, f"the {len(nodes)} nodes register"
            time.sleep(0.1)
        yield c
    finally:
        flame.shutdown()
        api._runtime = saved
        # Refs this process makes from now on belong to the session's cluster again.
        objects.ObjectStore._current = saved.conn.objects if saved is not None else None
        c.stop()


@pytest.fixture
def cluster(tmp_path: Path, store_mb: dict[str, int]) -> Iterator[Cluster]:
    with running(tmp_path, NODES, store_mb) as c:
        yield c
