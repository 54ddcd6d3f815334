"""Refs nested in objects (#12): a ref pickled inside another object keeps its object alive
while the container lives, for this process and for tasks, and goes with the container
(its file leaves the node's store)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np

import flame
from flame import api


@flame.service
def total(parts: list) -> float:
    # Refs inside an argument arrive as their values in the executor.
    return float(sum(np.asarray(p).sum() for p in parts))


def test_a_ref_inside_an_object_keeps_it_alive_until_the_container_goes() -> None:
    store = api.runtime().conn.objects
    assert store.node is not None, "the embedded cluster's client puts on its own node"
    node_dir = Path(store.node.dir)
    inner = flame.put(np.full(1 << 16, 2.0))
    control = flame.put(np.full(1 << 16, 1.0))  # dropped with inner, contained in nothing
    files = {r.id: node_dir / f"{r.id:016x}" for r in (inner, control)}
    inner_id, control_id = inner.id, control.id
    outer = flame.put([inner, 3])
    # An unrelated task next: the refs pickled into `outer` are not this task's to keep.
    assert total([1.0]).result(timeout=60) == 1.0
    del inner, control
    gc.collect()
    store._flush_deletes()  # what the deleter thread does, here and now
    # The control's delete went the same way at the same time: once its file is gone, the
    # inner object's would be too, were its container not holding it.
    _wait_gone(files[control_id])
    assert files[inner_id].exists(), "the container keeps the inner object"
    value = outer.get()
    assert float(value[0].get()[0]) == 2.0
    assert total(outer).result(timeout=60) == float(2 * (1 << 16) + 3)
    del outer, value
    gc.collect()
    _wait_gone(files[inner_id])


def _wait_gone(path: Path) -> None:
    deadline = time.monotonic() + 30
    while path.exists():
        assert time.monotonic() < deadline, f"{path} is still there after its object went"
        time.sleep(0.05)
