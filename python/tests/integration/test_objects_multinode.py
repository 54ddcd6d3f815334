"""Objects across nodes (#12) on a head and three node processes bound to 127.0.0.2-.4
(three hosts as far as Flame can tell): an array put once is fetched at most once per node
however many tasks read it; large results stay on the node that made them and go node to
node to the tasks that read them; a node killed with the only copies of results has those
results rebuilt by running their tasks again; and nothing is left in the stores after."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _procs import free_port, join_args, start_daemon, stop_daemon

import flame
from flame import api, objects

NODES = {"n1": "127.0.0.2", "n2": "127.0.0.3", "n3": "127.0.0.4"}


class Cluster:
    def __init__(self, tmp_path: Path, nodes: dict[str, str]) -> None:
        self.port, self.http = free_port(), free_port()
        self.state = tmp_path / "state"
        self.head = start_daemon(
            "head", "--port", str(self.port), "--http-port", str(self.http),
            "--state-dir", str(self.state), port=self.port,
        )  # fmt: skip
        self.address = f"http://127.0.0.1:{self.port}"
        self.nodes = {}
        for name, ip in nodes.items():
            self.nodes[name] = start_daemon(
                "node", "--head", self.address, "--bind", ip, "--slots", "1", "--name", name,
                "--python", sys.executable, "--work-dir", str(tmp_path / name),
                "--object-store-mb", "512",
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

    def stop(self) -> None:
        for proc in [*self.nodes.values(), self.head]:
            if proc.poll() is None:
                stop_daemon(proc)


@contextlib.contextmanager
def running(tmp_path: Path, nodes: dict[str, str]) -> Iterator[Cluster]:
    """A bare head and ``nodes`` (name: address), with this process as their client: on
    no node of theirs."""
    # This test's client talks to its own head: the session-wide embedded cluster steps
    # aside (as test_faults swaps runtimes) and comes back after.
    saved = api._runtime
    api._runtime = None
    c = Cluster(tmp_path, nodes)
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
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running(tmp_path, NODES) as c:
        yield c


def _node_ids() -> dict[int, str]:
    return {n["id"]: n["name"] for n in flame.cluster_info()["nodes"]}


@flame.service
def sample(a: np.ndarray) -> tuple[float, str]:
    import time

    time.sleep(0.05)  # long enough that the three single-slot nodes all take tasks
    return float(a[::4096].sum()), os.environ["FLAME_NODE_ID"]


@flame.service
def block(seed: int) -> np.ndarray:
    return np.full(1 << 19, float(seed))  # 4 MiB: over the 1 MiB result threshold


@flame.service
def add(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.sum() + b.sum())


@flame.service
def make(n: int) -> np.ndarray:
    return np.ones(n)


def test_a_broadcast_crosses_to_each_node_at_most_once(cluster: Cluster) -> None:
    # A task's 64 MiB result stays on its node; 30 tasks on three nodes read it.
    made = make((64 << 20) // 8)
    flame.wait([made])
    results = flame.get([sample(made) for _ in range(30)])
    assert {s for s, _ in results} == {float((64 << 20) // 8 // 4096)}
    ran_on = {node for _, node in results}
    assert len(ran_on) >= 2, f"tasks ran on {ran_on} only"
    # Every node that ran tasks and did not hold the object fetched it once: the heartbeats
    # bring the counters to the head within a few seconds.
    deadline = time.monotonic() + 15
    while cluster.metric("flame_object_transfers_total") < len(ran_on) - 1:
        assert time.monotonic() < deadline, "the nodes report their transfers"
        time.sleep(0.2)
    time.sleep(2.5)  # one more heartbeat: a second fetch would show now
    assert cluster.metric("flame_object_transfers_total") <= len(NODES)
    listed = api.runtime().conn.list_objects()["objects"]
    holders = [o for o in listed if o["task_id"] is not None]
    assert holders and len({holders[0]["primary_node"], *holders[0]["copy_nodes"]}) <= 3


def test_large_results_go_node_to_node_and_are_rebuilt_when_their_node_dies(
    cluster: Cluster,
) -> None:
    blocks = [block(i) for i in range(6)]
    flame.wait(blocks)
    listed = {o["object_id"]: o for o in api.runtime().conn.list_objects()["objects"]}
    results = [o for o in listed.values() if o["task_id"] is not None]
    assert len(results) == 6, f"every result stays on its node: {listed}"
    # Reducers read the mappers' results where they are (by reference, node to node).
    sums = flame.get([add(blocks[i], blocks[i + 1]) for i in range(0, 6, 2)])
    assert sums == [float((1 << 19) * (i + i + 1)) for i in range(0, 6, 2)]
    # Kill a node that holds results; reading them runs their tasks again elsewhere.
    names = _node_ids()
    victim_id = results[0]["primary_node"]
    victim = cluster.nodes[names[victim_id]]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    lost = [o["object_id"] for o in results if o["primary_node"] == victim_id]
    assert lost
    values = [f.result(timeout=120) for f in blocks]
    assert [float(v[0]) for v in values] == [float(i) for i in range(6)]
    assert cluster.metric("flame_object_reconstructions_total") >= len(lost)
