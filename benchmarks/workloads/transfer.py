"""``transfer``: node-to-node transfer rate (issue #12's "≥ 1 GB/s on loopback"). Flame on
three nodes (``flame3``) only; other systems report ``n/a`` (value ``null``).

A task makes one large array, its result, which stays on the task's node (a result over
1 MiB is stored there by reference); then one task per node starts at once. Each task asks
its own node for the object by id and times that read, one task at a time (a lock file): on
the node that holds it the read only maps the file; on the two others the node first
fetches it from the holder (over gRPC on loopback) into its memory dir. The rate is the
object's size over a fetching task's time, so it includes the write into the destination's
tmpfs and the mapping (the whole path a reader waits for), and the median of
the fetching tasks is reported."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any, Callable

SIZES = {"smoke": {"mb": 8}, "small": {"mb": 256}, "full": {"mb": 1024}}


def make(mb: int) -> Any:
    import numpy as np

    return np.ones(mb * 1024 * 1024 // 8)


def read_on_node(object_id: int, start_at: float, lock_path: str) -> tuple[str, float]:
    import fcntl
    import os
    import time

    from flame._node_objects import NodeObjects

    # Every task waits for the same moment, so all slots (one per node) are taken at once
    # and the tasks land on different nodes.
    time.sleep(max(0.0, start_at - time.time()))
    node = NodeObjects.from_env()
    assert node is not None, "a flame3 executor is on a node"
    # One read at a time (the nodes share this machine, and so this lock file): each rate
    # is one transfer's, not two sharing the holder and the cores.
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        t0 = time.perf_counter()
        view = node.view(object_id)
        took = time.perf_counter() - t0
    assert view.nbytes > 0
    return os.environ.get("FLAME_NODE_ID", ""), took


def run(system: Any, sizes: dict[str, Any], emit: Callable[..., None]) -> None:
    mb = sizes["mb"]
    if getattr(system, "name", "") != "flame3":
        emit("node_to_node", None, "GB/s", mb=mb)
        return
    nodes = 3
    fn = system.remote(read_on_node)
    made = system.submit(system.remote(make), mb)
    system.flame.wait([made])
    # The result's ref (the future owns it, and so keeps the object) names the object id.
    ref = made._ref
    assert ref is not None, f"a {mb} MB result stays on its node by reference"
    size = ref.size
    cpu0 = system.node_cpu_seconds()
    start_at = time.time() + 1.0
    with tempfile.TemporaryDirectory(prefix="flame-transfer-") as tmp:
        lock = os.path.join(tmp, "lock")
        got = system.get(system.map(fn, [ref.id] * nodes, [start_at] * nodes, [lock] * nodes))
    took = sorted(t for _, t in got)
    on = {n for n, _ in got}
    if len(on) < nodes:
        raise RuntimeError(f"the readers ran on {sorted(on)}, not on {nodes} nodes")
    fetched = took[1:]  # the fastest one read the holder's own file
    emit("node_to_node", size / statistics.median(fetched) / 1e9, "GB/s", mb=mb)
    emit("map_local", took[0], "s", mb=mb)
    # The node daemons' CPU for both transfers (each sends or receives; none is idle long).
    moved_gb = len(fetched) * size / 1e9
    emit("node_cpu_per_gb", (system.node_cpu_seconds() - cpu0) / moved_gb, "s", mb=mb)
