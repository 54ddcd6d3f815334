"""Bad object input on three nodes (#12): a ref from another cluster, a forged id, and a
damaged object file in a node's store are each refused with an error naming the object,
and never reach a task as data."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import _three_nodes
import numpy as np
import pytest
from _three_nodes import NODES, Cluster

import flame
from flame import api, errors

cluster = _three_nodes.cluster  # the fixtures
store_mb = _three_nodes.store_mb


@flame.service
def fill(value: float) -> np.ndarray:
    return np.full(1 << 18, value)  # 2 MiB: a result that stays on its node


@flame.service
def total(a: np.ndarray) -> float:
    return float(a.sum())


def _connect(c: Cluster) -> None:
    flame.shutdown()
    flame.init(c.address)
    deadline = time.monotonic() + 30
    while len([n for n in flame.cluster_info()["nodes"] if n["alive"]]) < len(NODES):
        assert time.monotonic() < deadline, "the three nodes register"
        time.sleep(0.1)


def test_a_ref_from_another_cluster_is_refused_naming_it(cluster: Cluster, tmp_path: Path) -> None:
    # Cluster A makes a result and its ref is pickled; cluster B (fresh, so its clients and
    # tasks get the same ids) makes its own result under the same id. A's ref, unpickled or
    # passed to a task in B, must never stand for B's object.
    other = Cluster(tmp_path / "a", NODES)
    try:
        _connect(other)
        _connect(other)  # A's second client: as B's next one is (ids count from 1 per head)
        made = fill(1.0)
        flame.wait([made])
        from_a = made._ref
        blob = pickle.dumps(from_a)
        _connect(cluster)
        mine = fill(2.0)
        flame.wait([mine])
        assert mine._ref.id == from_a.id, "the two clusters' results share an id"
        named = f"object {from_a.id:#x} belongs to another cluster"
        with pytest.raises(errors.InvalidArgumentError, match=named):
            pickle.loads(blob)
        with pytest.raises(errors.FlameError, match=named):
            total(from_a)
        assert total(mine).result(timeout=60) == 2.0 * (1 << 18)
    finally:
        other.stop()


def test_a_forged_id_is_refused_naming_it(cluster: Cluster) -> None:
    forged = flame.objects.ObjectRef(0x7FFF_0000_0000_1234, 64)
    with pytest.raises(errors.ObjectLostError, match="0x7fff000000001234"):
        flame.get(forged)
    with pytest.raises(errors.ObjectLostError, match="0x7fff000000001234"):
        total(forged).result(timeout=60)


@flame.service
def slow_total(a: np.ndarray) -> tuple[float, str]:
    import time

    time.sleep(0.1)  # long enough that the three single-slot nodes all take tasks
    return float(a.sum()), os.environ["FLAME_NODE_ID"]


def _damage(path: str, how: str) -> None:
    mode = os.stat(path).st_mode
    os.chmod(path, 0o600)
    try:
        with open(path, "r+b") as f:
            if how == "truncated":
                f.truncate(64 + 1000)
            else:  # a flipped bit in the header's length field: its checksum fails
                f.seek(17)
                byte = f.read(1)[0]
                f.seek(17)
                f.write(bytes([byte ^ 0x01]))
    finally:
        os.chmod(path, mode & 0o7777)


@pytest.mark.parametrize("how", ["truncated", "header"])
def test_a_damaged_object_file_on_a_node_never_reaches_a_task(cluster: Cluster, how: str) -> None:
    made = fill(3.0)
    flame.wait([made])
    [obj] = [o for o in api.runtime().conn.list_objects()["objects"] if o["task_id"]]
    holder = _three_nodes.node_names()[obj["primary_node"]]
    path = os.path.join(cluster.memory_dir(holder), f"{obj['object_id']:016x}")
    _damage(path, how)
    named = f"{obj['object_id']:#x}"
    right = 3.0 * (1 << 18)
    # Tasks on every node read it (the holder maps its damaged file; the others fetch it
    # from the holder), then this client: each gets the right value (refetched or rebuilt)
    # or an error naming the object, never the damaged bytes.
    outcomes = []
    for f in [slow_total(made) for _ in range(9)]:
        try:
            outcomes.append(f.result(timeout=60)[0])
        except errors.FlameError as e:
            assert named in str(e), e
            outcomes.append("error")
    try:
        outcomes.append(float(made.result(timeout=60).sum()))
    except errors.FlameError as e:
        assert named in str(e), e
        outcomes.append("error")
    assert set(outcomes) <= {right, "error"}, outcomes
    assert all(p.poll() is None for p in cluster.nodes.values()), "no node died of it"
