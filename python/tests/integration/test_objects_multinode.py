"""Objects across nodes (#12) on a head and three node processes bound to 127.0.0.2-.4
(three hosts as far as Flame can tell): an array put once is fetched at most once per node
however many tasks read it; large results stay on the node that made them and go node to
node to the tasks that read them; a node killed with the only copies of results has those
results rebuilt by running their tasks again; and nothing is left in the stores after."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import _three_nodes
import numpy as np
import pytest
from _three_nodes import Cluster, node_names

import flame
from flame import api

cluster = _three_nodes.cluster  # the fixtures
store_mb = _three_nodes.store_mb


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


_BIG = 200_000_000  # the 200 MB


def _read_by_30_tasks(
    cluster: Cluster, ref: object, object_id: int, expected: float, holder: int
) -> None:
    """30 tasks spread over the three nodes read `ref` (held by node `holder` only): each
    other node that ran some fetches it once, the holder never."""
    results = flame.get([sample(ref) for _ in range(30)])
    assert {s for s, _ in results} == {expected}
    ran_on = {int(node) for _, node in results}
    assert len(ran_on) >= 2, f"tasks ran on {ran_on} only"
    fetchers = len(ran_on - {holder})
    cluster.wait_metric("flame_object_transfers_total", fetchers)
    time.sleep(2.5)  # one more heartbeat: a second fetch would show now
    assert cluster.metric("flame_object_transfers_total") == fetchers
    crossed = cluster.metric("flame_object_transferred_bytes_total")
    assert _BIG * fetchers <= crossed < (_BIG + (1 << 20)) * fetchers
    listed = api.runtime().conn.list_objects()["objects"]
    [obj] = [o for o in listed if o["object_id"] == object_id]
    assert obj["primary_node"] == holder and set(obj["copy_nodes"]) <= ran_on - {holder}


def test_a_200mb_result_crosses_to_each_node_at_most_once(cluster: Cluster) -> None:
    made = make(_BIG // 8)  # a task's result stays on its node
    flame.wait([made])
    [obj] = [o for o in api.runtime().conn.list_objects()["objects"] if o["task_id"]]
    _read_by_30_tasks(
        cluster, made, obj["object_id"], float(len(range(0, _BIG // 8, 4096))), obj["primary_node"]
    )


def test_a_200mb_put_from_a_client_on_a_node_crosses_to_each_node_at_most_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client on node n1 (as a task's client is: the node's socket in its environment)
    # puts the array into n1's store; the other nodes fetch it from there.
    memory = cluster.memory_dir("n1")
    n1 = cluster.node_id("n1")
    flame.shutdown()
    monkeypatch.setenv("FLAME_NODE_SOCKET", os.path.join(memory, "node.sock"))
    monkeypatch.setenv("FLAME_NODE_OBJECTS", memory)
    monkeypatch.setenv("FLAME_NODE_ID", str(n1))
    flame.init(cluster.address)
    a = np.arange(_BIG // 8, dtype=np.float64)
    ref = flame.put(a)
    assert os.path.exists(os.path.join(memory, f"{ref.id:016x}")), "stored on n1"
    _read_by_30_tasks(cluster, ref, ref.id, float(a[::4096].sum()), n1)


def test_large_results_go_node_to_node_and_are_rebuilt_when_their_node_dies(
    cluster: Cluster,
) -> None:
    blocks = [block(i) for i in range(6)]
    flame.wait(blocks)
    listed = {o["object_id"]: o for o in api.runtime().conn.list_objects()["objects"]}
    results = [o for o in listed.values() if o["task_id"] is not None]
    assert len(results) == 6, f"every result stays on its node: {listed}"
    # Kill a node that holds results (their only copies: nothing read them yet); reading
    # them runs their tasks again elsewhere.
    names = node_names()
    victim_id = results[0]["primary_node"]
    victim = cluster.nodes[names[victim_id]]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    lost = [o["object_id"] for o in results if o["primary_node"] == victim_id]
    assert lost
    values = [f.result(timeout=120) for f in blocks]
    assert [float(v[0]) for v in values] == [float(i) for i in range(6)]
    assert cluster.metric("flame_object_reconstructions_total") >= len(lost)
    # Reducers read the mappers' results where they are (by reference, node to node).
    sums = flame.get([add(blocks[i], blocks[i + 1]) for i in range(0, 6, 2)])
    assert sums == [float((1 << 19) * (i + i + 1)) for i in range(0, 6, 2)]


@flame.service
def noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(2 << 20)  # 16 MiB


@flame.service
def digests(*arrays: np.ndarray) -> tuple[list[str], str]:
    import hashlib
    import time

    time.sleep(0.1)  # long enough that the three single-slot nodes all take tasks
    return [hashlib.sha256(a).hexdigest() for a in arrays], os.environ["FLAME_NODE_ID"]


@pytest.mark.parametrize("store_mb", [{"n1": 40, "n2": 40, "n3": 40}])
def test_stores_over_budget_spill_and_restore_every_object_across_nodes(
    cluster: Cluster,
) -> None:
    # 8 results of 16 MiB over three nodes of 40 MiB each: some node made three (48 MiB,
    # over its budget), and every reader takes all 128 MiB to its node, most of it from
    # the other nodes.
    made = [noise(seed) for seed in range(8)]
    flame.wait(made)
    right = [hashlib.sha256(np.random.default_rng(s).random(2 << 20)).hexdigest() for s in range(8)]
    results = flame.get([digests(*made) for _ in range(6)])
    assert all(d == right for d, _ in results)
    assert len({node for _, node in results}) >= 2
    cluster.wait_metric("flame_object_spilled_bytes_total", 16 << 20)
    # Read back again on the nodes (restored from their spill dirs) and here.
    assert all(d == right for d, _ in flame.get([digests(*made) for _ in range(6)]))
    assert [hashlib.sha256(f.result()).hexdigest() for f in made] == right
